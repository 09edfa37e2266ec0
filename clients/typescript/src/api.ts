// What both entry points (index.ts for Node, browser.ts) export besides
// their Client: errors (and their details' schemas), codes, and every
// generated message, enum and schema.
// Nothing here may import a Node module.
export type {
  CallOpts,
  ClientOptions,
  ListTasksInit,
  StreamLogsRequestInit,
  SubmitOptions,
  Submitted,
  TaskSpecInit,
  Waited,
  WaitOptions,
  WatchOptions,
  WatchTasksInit,
} from "./core.js";
export { ClientBase } from "./core.js";
export {
  ClaudomatorError,
  fieldViolations,
  grpcCodeName,
  preconditionViolations,
  TASK_STATE,
  type FieldViolation,
  type PreconditionViolation,
} from "./errors.js";
export { Code } from "@connectrpc/connect";
export { timestampDate } from "@bufbuild/protobuf/wkt";
export * from "./gen/claudomator/v1/task_pb.js";
export * from "./gen/claudomator/v1/service_pb.js";
// google.rpc.BadRequest and PreconditionFailure, for `err.findDetails(BadRequestSchema)`.
export * from "./gen/google/rpc/error_details_pb.js";
