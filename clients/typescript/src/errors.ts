import type { DescMessage, MessageShape } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";

import { BadRequestSchema, PreconditionFailureSchema } from "./gen/google/rpc/error_details_pb.js";

/** One bad field of a refused request (from a `google.rpc.BadRequest`). */
export interface FieldViolation {
  /** The field's path as the proto names it: `spec.timeout`, `spec.agent.max_budget_usd`, `page_size`, `task_ids[2]`. */
  readonly field: string;
  /** Why, a fragment that reads after the field's name: `must not be empty`. */
  readonly description: string;
}

/** A precondition the request failed (from a `google.rpc.PreconditionFailure`). */
export interface PreconditionViolation {
  /** `TASK_STATE`: a task in a state that does not allow the request. */
  readonly type: string;
  /** For `TASK_STATE`: the task's id. */
  readonly subject: string;
  /** For `TASK_STATE`: `current COMPLETED; wanted READY` (or `wanted one of A, B`). */
  readonly description: string;
}

/** `PreconditionViolation.type` of a task in a state the request does not fit. */
export const TASK_STATE = "TASK_STATE";

/**
 * A call the server (or the connection) refused.
 *
 * `code` is the gRPC status code (Connect's `Code` enum has the same numbers:
 * `Code.InvalidArgument === 3`), `codeName` its gRPC spelling
 * (`"INVALID_ARGUMENT"`), `message` the server's message as sent (for
 * INVALID_ARGUMENT it starts with the field: `spec.timeout: cannot parse ...`,
 * then `; and N more (fields)` when there are several).
 * `fieldViolations` lists every bad field of an INVALID_ARGUMENT, and
 * `preconditionViolations` the task state of a FAILED_PRECONDITION (both
 * decoded from the status details; empty when there are none).
 * `findDetails(schema)` reads any detail, as on a `ConnectError`.
 * The original `ConnectError` is the `cause`.
 */
export class ClaudomatorError extends Error {
  override readonly name = "ClaudomatorError";
  readonly code: Code;
  readonly codeName: string;
  readonly fieldViolations: readonly FieldViolation[];
  readonly preconditionViolations: readonly PreconditionViolation[];

  constructor(code: Code, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.code = code;
    this.codeName = grpcCodeName(code);
    this.fieldViolations = fieldViolations(options?.cause);
    this.preconditionViolations = preconditionViolations(options?.cause);
  }

  /** The details of type `desc` the server sent (`findDetails(BadRequestSchema)`). */
  findDetails<Desc extends DescMessage>(desc: Desc): MessageShape<Desc>[] {
    return this.cause instanceof ConnectError ? this.cause.findDetails(desc) : [];
  }

  /** Wraps whatever a call threw; a ClaudomatorError passes through. */
  static from(err: unknown): ClaudomatorError {
    if (err instanceof ClaudomatorError) {
      return err;
    }
    const connect = ConnectError.from(err);
    return new ClaudomatorError(connect.code, connect.rawMessage, { cause: err });
  }
}

/** The details of type `desc` in a `ClaudomatorError` or `ConnectError`; none for anything else. */
function detailsOf<Desc extends DescMessage>(err: unknown, desc: Desc): MessageShape<Desc>[] {
  if (err instanceof ClaudomatorError || err instanceof ConnectError) {
    return err.findDetails(desc);
  }
  return [];
}

/** Every bad field of a refused request (a `ClaudomatorError` or a `ConnectError`), in the server's order. */
export function fieldViolations(err: unknown): FieldViolation[] {
  return detailsOf(err, BadRequestSchema).flatMap((detail) =>
    detail.fieldViolations.map(({ field, description }) => ({ field, description })),
  );
}

/** The failed preconditions of a refused request (a `ClaudomatorError` or a `ConnectError`). */
export function preconditionViolations(err: unknown): PreconditionViolation[] {
  return detailsOf(err, PreconditionFailureSchema).flatMap((detail) =>
    detail.violations.map(({ type, subject, description }) => ({ type, subject, description })),
  );
}

/** `Code.InvalidArgument` -> `"INVALID_ARGUMENT"`, as gRPC names it. */
export function grpcCodeName(code: Code): string {
  if (code === Code.Canceled) {
    return "CANCELLED"; // gRPC's spelling
  }
  const name = Code[code];
  return name === undefined ? `CODE_${code}` : name.replace(/([a-z])([A-Z])/g, "$1_$2").toUpperCase();
}
