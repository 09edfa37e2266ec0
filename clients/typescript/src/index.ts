/**
 * A TypeScript client for claudomator, generated from its proto/ with
 * protoc-gen-es (`buf generate`) and served over gRPC by @connectrpc/connect-node.
 *
 *   const client = new Client("127.0.0.1:7070");
 *   const { task } = await client.submitTask({ instructions: "Fix the flaky test", tags: ["ci"] });
 *
 * Every generated message, enum and schema is re-exported (`Task`,
 * `TaskState`, `TaskSpecSchema`, ...); `ClaudomatorService` is the service
 * descriptor for `createClient` users. In a browser, import
 * `claudomator-client/browser` instead (gRPC-Web, no Node modules).
 */
export { Client } from "./client.js";
export * from "./api.js";
