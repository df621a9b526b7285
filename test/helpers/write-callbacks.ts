/**
 * The node:http and Express check that a handler's write callbacks are called when the commit
 * fails: `writeWithCallbacks` writes `a` and ends with `b`, each with a callback, and records
 * what each callback got; `assertCallbacksCalled` requests `url` and waits for both.
 */
import assert from "node:assert/strict";
import type { ServerResponse } from "node:http";
import { sleep } from "./keys.js";

export type CallbackFailure = "store down" | "too large" | "none";

/** `res.write("a", cb)` then `res.end("b", cb)`; `calls` gets `write: ok|error` and `end: ok|error`. */
export function writeWithCallbacks(res: ServerResponse, calls: string[]): void {
	const record = (name: string) => (error?: Error | null) => void calls.push(`${name}: ${error ? "error" : "ok"}`);
	res.write("a", record("write"));
	res.end("b", record("end"));
}

/** Both callbacks are called within a second, with an error unless the commit succeeded. */
export async function assertCallbacksCalled(url: string, calls: string[], failure: CallbackFailure): Promise<void> {
	const reply = await fetch(url);
	await reply.text();
	assert.equal(reply.status, failure === "none" ? 200 : 500);
	for (let waited = 0; calls.length < 2 && waited < 1000; waited += 10) await sleep(10);
	const outcome = failure === "none" ? "ok" : "error";
	assert.deepEqual(calls, [`write: ${outcome}`, `end: ${outcome}`], "no callback is left hanging");
}
