/**
 * The node:http and Express check that a body piped into the response keeps its backpressure
 * while a slow commit holds the headers back: a memory store whose writes wait for a gate the
 * test opens, a generated source that counts the bytes it hands out, and the check itself.
 */
import assert from "node:assert/strict";
import type { ServerResponse } from "node:http";
import { Readable } from "node:stream";
import type { SessionStore } from "sessionkit";
import { memoryStore } from "sessionkit/stores/memory";
import { sleep } from "./keys.js";

/** A memory store, asynchronous, whose writes wait until `open()`: a commit as slow as the test wants. */
export interface GatedStore {
	readonly store: SessionStore;
	/** Resolves once a write waits at the gate: the commit is running. */
	readonly writeWaiting: Promise<void>;
	open(): void;
}

export function gatedStore(): GatedStore {
	const inner = memoryStore({ sweepInterval: 0 });
	let open!: () => void;
	const gate = new Promise<void>((resolve) => (open = resolve));
	let waiting!: () => void;
	const writeWaiting = new Promise<void>((resolve) => (waiting = resolve));
	const gated = async (): Promise<void> => {
		waiting();
		await gate;
	};
	const store: SessionStore = {
		name: "gated",
		get: async (key) => inner.get(key),
		set: async (key, record, expiresAt) => (await gated(), inner.set(key, record, expiresAt)),
		replace: async (key, record, expiresAt) => (await gated(), inner.replace(key, record, expiresAt)),
		merge: async (key, changes, expiresAt) => (await gated(), inner.merge!(key, changes, expiresAt)),
		delete: async (key) => (await gated(), inner.delete(key)),
		touch: async (key, idle, expiresAt) => (await gated(), inner.touch(key, idle, expiresAt)),
		close: () => inner.close!(),
	};
	return { store, writeWaiting, open };
}

/**
 * `total` bytes in chunks of `chunk` bytes (64 MB in 64 KB chunks unless told), made as they are
 * read; `handedOut` counts the bytes read so far.
 */
export class CountedSource extends Readable {
	handedOut = 0;

	constructor(
		readonly total = 64 * 1024 * 1024,
		readonly chunk = 64 * 1024,
	) {
		super();
	}

	override _read(): void {
		if (this.handedOut >= this.total) {
			this.push(null);
			return;
		}
		this.handedOut += this.chunk;
		this.push(Buffer.alloc(this.chunk, 0x61));
	}
}

/** What the test saw while the commit held the headers back. */
export interface HeldBack {
	handedOut: number;
	writableLength: number;
	writableNeedDrain: boolean;
}

/** Waits until `source` has handed out nothing new for 100 ms (3 s at most). */
async function untilStill(source: CountedSource): Promise<void> {
	let last = -1;
	for (let waited = 0; waited < 3000; waited += 100) {
		if (source.handedOut === last) return;
		last = source.handedOut;
		await sleep(100);
	}
}

/**
 * Requests `url`, whose handler changes the session and pipes the `source` it is given
 * (`started` hands it and the response over) into its response, while `gate` holds the commit
 * back. Then the source must have handed out little more than the response's high-water mark,
 * and the whole body must come through, with the cookie, once the commit ends.
 */
export async function assertBackpressureWhileCommitting(url: string, gate: GatedStore, started: Promise<{ source: CountedSource; res: ServerResponse }>): Promise<HeldBack> {
	const reply = fetch(url);
	const { source, res } = await started;
	await gate.writeWaiting;
	await untilStill(source);
	const held: HeldBack = { handedOut: source.handedOut, writableLength: res.writableLength, writableNeedDrain: res.writableNeedDrain };
	gate.open();
	const response = await reply;
	assert.equal(response.status, 200);
	assert.equal(response.headers.getSetCookie().length, 1, "the commit's cookie is sent");
	let received = 0;
	for await (const chunk of response.body!) received += (chunk as Uint8Array).byteLength;
	assert.equal(received, source.total, "the whole body comes through after the commit");
	// The source's own buffer, a chunk in flight and the queue up to the high-water mark.
	const bound = 2 * source.readableHighWaterMark + 4 * source.chunk + res.writableHighWaterMark;
	assert.ok(held.handedOut <= bound, `the source handed out ${held.handedOut} bytes while the commit ran (at most ${bound} expected)`);
	assert.equal(held.writableNeedDrain, true, "writableNeedDrain reads true while the queue is past the high-water mark");
	assert.ok(held.writableLength >= res.writableHighWaterMark && held.writableLength <= bound, `writableLength reads the queued bytes (${held.writableLength})`);
	return held;
}
