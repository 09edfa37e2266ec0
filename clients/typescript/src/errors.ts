import { Code, ConnectError } from "@connectrpc/connect";

/**
 * A call the server (or the connection) refused.
 *
 * `code` is the gRPC status code (Connect's `Code` enum has the same numbers:
 * `Code.InvalidArgument === 3`), `codeName` its gRPC spelling
 * (`"INVALID_ARGUMENT"`), `message` the server's message as sent (for
 * INVALID_ARGUMENT it starts with the field: `spec.timeout: cannot parse ...`).
 * The original `ConnectError` is the `cause`.
 */
export class ClaudomatorError extends Error {
  override readonly name = "ClaudomatorError";
  readonly code: Code;
  readonly codeName: string;

  constructor(code: Code, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.code = code;
    this.codeName = grpcCodeName(code);
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

/** `Code.InvalidArgument` -> `"INVALID_ARGUMENT"`, as gRPC names it. */
export function grpcCodeName(code: Code): string {
  if (code === Code.Canceled) {
    return "CANCELLED"; // gRPC's spelling
  }
  const name = Code[code];
  return name === undefined ? `CODE_${code}` : name.replace(/([a-z])([A-Z])/g, "$1_$2").toUpperCase();
}
