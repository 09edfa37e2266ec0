// Reads one execution's whole log with the TypeScript client and prints
// {"events": N, "seconds": S} (S from the call to the last event).
// Used by clients/bench-streamlogs:  node streamlogs_ts.mjs ADDRESS EXECUTION_ID
import { Client } from "../typescript/dist/src/index.js";

const [address, executionId] = process.argv.slice(2);
const client = new Client(address);
// One call first, so that connecting is not measured (the same for every client).
await client.getExecution(executionId);
const start = process.hrtime.bigint();
let events = 0;
let last = -1n;
for await (const event of client.streamLogs({ executionId })) {
  last = event.offset;
  events++;
}
const seconds = Number(process.hrtime.bigint() - start) / 1e9;
client.close();
if (last !== BigInt(events - 1)) {
  throw new Error(`offsets out of order: last ${last}, ${events} events`);
}
console.log(JSON.stringify({ events, seconds }));
