/**
 * A TypeScript client for claudomator, generated from its proto/ with
 * protoc-gen-es (`buf generate`) and served over gRPC by @connectrpc/connect-node.
 *
 *   const client = new Client("127.0.0.1:7070");
 *   const { task } = await client.submitTask({ instructions: "Fix the flaky test", tags: ["ci"] });
 *
 * Every generated message, enum and schema is re-exported (`Task`,
 * `TaskState`, `TaskSpecSchema`, ...); `ClaudomatorService` is the service
 * descriptor for `createClient` users.
 */
export { Client } from "./client.js";
export type {
  ClientOptions,
  ListTasksInit,
  StreamLogsRequestInit,
  SubmitOptions,
  Submitted,
  TaskSpecInit,
} from "./client.js";
export { ClaudomatorError, grpcCodeName } from "./errors.js";
export { Code } from "@connectrpc/connect";
export { timestampDate } from "@bufbuild/protobuf/wkt";
export * from "./gen/claudomator/v1/task_pb.js";
export * from "./gen/claudomator/v1/service_pb.js";
