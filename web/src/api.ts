// The board's one way to the server: the browser client of clients/typescript
// (gRPC-Web, same origin), the token kept in the browser, and what a failed
// call means for a person.
import { ClaudomatorError, Client, Code } from "../../clients/typescript/src/browser.js";

import { timestampDate } from "../../clients/typescript/src/browser.js";

export * from "../../clients/typescript/src/browser.js";
/** A protobuf Timestamp (`task.createdAt`). */
export type Timestamp = Parameters<typeof timestampDate>[0];

const TOKEN_KEY = "claudomator.token";

/** The token: this tab's (sessionStorage), else one remembered (localStorage). */
export function savedToken(): string {
  return sessionStorage.getItem(TOKEN_KEY) ?? localStorage.getItem(TOKEN_KEY) ?? "";
}

export function saveToken(token: string, remember: boolean): void {
  sessionStorage.setItem(TOKEN_KEY, token);
  if (remember) {
    localStorage.setItem(TOKEN_KEY, token);
  } else {
    localStorage.removeItem(TOKEN_KEY);
  }
}

export function forgetToken(): void {
  sessionStorage.removeItem(TOKEN_KEY);
  localStorage.removeItem(TOKEN_KEY);
}

/** A client of the server this page came from, with the saved token. */
export function connect(): Client {
  return new Client(location.origin, { token: savedToken() });
}

export function asError(err: unknown): ClaudomatorError {
  return ClaudomatorError.from(err);
}

/** The token is missing or wrong. */
export function isAuthError(err: unknown): boolean {
  const code = asError(err).code;
  return code === Code.Unauthenticated || code === Code.PermissionDenied;
}

/** The server could not be reached (or went away): worth trying again. */
export function isUnreachable(err: unknown): boolean {
  const code = asError(err).code;
  return code === Code.Unavailable || code === Code.Unknown || code === Code.Internal || code === Code.Aborted;
}

/**
 * "INVALID_ARGUMENT: spec.timeout: cannot parse ...", and when a request has
 * several bad fields, each of them: "INVALID_ARGUMENT: spec.timeout: ...; spec.tags: ..."
 */
export function describe(err: unknown): string {
  const e = asError(err);
  if (e.fieldViolations.length > 1) {
    return `${e.codeName}: ${e.fieldViolations.map((v) => `${v.field}: ${v.description}`).join("; ")}`;
  }
  return `${e.codeName}: ${e.message}`;
}
