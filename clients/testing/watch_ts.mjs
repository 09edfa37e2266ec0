// Follows WatchTasks with the TypeScript client until COUNT changes arrived
// and prints {"events": N, "start": T0, "last": T1} (wall-clock seconds: T0
// just before the call, T1 at the last change).
// Used by clients/bench-streamlogs:  node watch_ts.mjs ADDRESS TAG CURSOR COUNT
import { Client } from "../typescript/dist/src/index.js";

const [address, tag, cursor, countText] = process.argv.slice(2);
const count = Number(countText);
const client = new Client(address);
await client.getSystemStatus(); // connect first, as every watcher does
const controller = new AbortController();
const start = Date.now() / 1000;
let events = 0;
try {
  for await (const event of client.watchTasks({ tag, cursor }, { signal: controller.signal })) {
    if (event.event.case === "change" && ++events === count) {
      break;
    }
  }
} finally {
  controller.abort();
}
const last = Date.now() / 1000;
client.close();
console.log(JSON.stringify({ events, start, last }));
