/**
 * The claudomator client for web pages: the same calls as the Node client
 * (`ClientBase`), over gRPC-Web (HTTP/1.1 or 2, `fetch`) with
 * @connectrpc/connect-web. It pulls in no Node module.
 *
 *   import { Client, TaskState } from "claudomator-client/browser";
 *   const client = new Client("http://127.0.0.1:7070", { token });
 *   const { task } = await client.submitTask({ instructions: "Fix the flaky test", tags: ["ci"] });
 *
 * The server must list the page's origin in `cors_origins` (browsers send
 * `Origin` on every POST), unless the page is the server's own reached by an
 * IP address or `localhost` (its board); otherwise the
 * server refuses the call (403), which a page on another origin sees as
 * UNKNOWN ("Failed to fetch").
 */
import { createGrpcWebTransport } from "@connectrpc/connect-web";

import { baseUrl, ClientBase, interceptorsFor, type ClientOptions } from "./core.js";

export * from "./api.js";

/**
 * A claudomator server reached over gRPC-Web from a browser. Every call is
 * one `fetch`; there is no connection to close. Abort a stream with
 * `break` or `options.signal`.
 */
export class Client extends ClientBase {
  constructor(address: string, options: ClientOptions = {}) {
    const url = baseUrl(address);
    const transport = createGrpcWebTransport({
      baseUrl: url,
      useBinaryFormat: true,
      interceptors: interceptorsFor(options),
    });
    super(url, transport, options);
  }
}
