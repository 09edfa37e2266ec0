import { createGrpcTransport, Http2SessionManager } from "@connectrpc/connect-node";

import { baseUrl, ClientBase, interceptorsFor, type ClientOptions } from "./core.js";

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

/**
 * A connection to a claudomator server over gRPC (HTTP/2), for Node.js.
 * The calls are `ClientBase`'s (core.ts), the same as the browser client's;
 * `close()` ends the connection (an idle one would keep Node running).
 */
export class Client extends ClientBase {
  private readonly sessions: Http2SessionManager;

  constructor(address: string, options: ClientOptions = {}) {
    const url = baseUrl(address);
    const sessions = new Http2SessionManager(url);
    const transport = createGrpcTransport({
      baseUrl: url,
      sessionManager: sessions,
      interceptors: interceptorsFor(options),
    });
    super(url, transport, options);
    this.sessions = sessions;
  }

  /** Closes the connection; calls still running fail. */
  close(): void {
    this.sessions.abort();
  }
}
