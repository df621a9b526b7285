/**
 * The node:http and Express check for a head sent early (`res.flushHeaders()`, `res.writeHead()`)
 * while an asynchronous commit runs, with the `end` long after: the head goes out once, with the
 * commit's cookie, and the body once. Read from the raw bytes, where a second head would show.
 */
import assert from "node:assert/strict";
import type { ServerResponse } from "node:http";
import { connect } from "node:net";
import type { GatedStore } from "./backpressure.js";
import { sleep } from "./keys.js";

export const EARLY_HEADS = ["flushHeaders()", "writeHead(201, headers)", "writeHead(201) then flushHeaders()"] as const;

export type EarlyHead = (typeof EARLY_HEADS)[number];

/** When the handler's `end` comes: once the commit is done, or while it still runs. */
export const END_TIMES = ["after the commit", "during the commit"] as const;

export type EndTime = (typeof END_TIMES)[number];

/** Sends the head as `how` says; the status is 201 after a `writeHead`, else 200. */
export function sendHeadEarly(res: ServerResponse, how: EarlyHead): void {
	if (how === "flushHeaders()") res.flushHeaders();
	else if (how === "writeHead(201, headers)") res.writeHead(201, { "X-Early": "yes" });
	else {
		res.writeHead(201);
		res.flushHeaders();
	}
}

/** A promise the handler waits for before its `end`, and what lets it go on. */
export function lateEnd(): { wait: Promise<void>; release(): void } {
	let release!: () => void;
	const wait = new Promise<void>((resolve) => (release = resolve));
	return { wait, release };
}

function count(text: string, part: string): number {
	return text.split(part).length - 1;
}

/**
 * Requests `/` on `url` over a raw connection; the handler changes the session on a `gate`d
 * store, sends its head `how`, and ends with "the body" once `end` is released, at `when`.
 */
export async function assertHeadSentOnce(url: string, gate: GatedStore, end: { release(): void }, how: EarlyHead, when: EndTime, cookieName: string): Promise<void> {
	const socket = connect({ host: "127.0.0.1", port: Number(new URL(url).port) });
	let received = "";
	socket.on("data", (chunk: Buffer) => (received += chunk.toString("latin1")));
	const closed = new Promise<void>((resolve, reject) => {
		socket.on("end", resolve);
		socket.on("error", reject);
	});
	socket.write("GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
	await gate.writeWaiting;
	await sleep(50);
	assert.equal(received, "", "nothing goes out while the commit runs");
	if (when === "after the commit") {
		gate.open();
		await sleep(100);
		// Node sends a head given to `writeHead` with the first write, a flushed one at once.
		if (how !== "writeHead(201, headers)") assert.match(received, /\r\n\r\n$/, "the flushed head went out once the commit was done");
		end.release();
	} else {
		end.release();
		await sleep(50);
		gate.open();
	}
	await closed;
	assert.equal(count(received, "HTTP/1.1 "), 1, `one head:\n${received}`);
	assert.match(received, how === "flushHeaders()" ? /^HTTP\/1\.1 200 / : /^HTTP\/1\.1 201 /);
	const head = received.slice(0, received.indexOf("\r\n\r\n"));
	assert.equal(count(head.toLowerCase(), `set-cookie: ${cookieName}=`), 1, `the commit's cookie, once:\n${head}`);
	if (how === "writeHead(201, headers)") assert.match(head, /\r\nX-Early: yes(\r\n|$)/i);
	assert.equal(count(received, "the body"), 1, `the body, once:\n${received}`);
}
