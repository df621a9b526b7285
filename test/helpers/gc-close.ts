/**
 * `close()` and the gc timer of a store on a database the app shares: a gc statement in flight
 * when `close()` is called finishes before `close()` resolves, so nothing of the store runs after.
 */
import assert from "node:assert/strict";
import type { AsyncSessionStore } from "sessionkit";
import { makeRecord } from "sessionkit/testing";
import { randomKey, sleep } from "./keys.js";

/** A connection of the test's own, taken from the app's pool (mysql2's and pg's alike). */
interface Holder {
	query(sql: string): Promise<unknown>;
	release(): void;
}

export interface BlockedGc {
	/** A store on the test's table, with the app's pool and this `gcInterval`. */
	makeStore(gcInterval: number): AsyncSessionStore & { close(): Promise<void> };
	holder: Holder;
	/** The statements that begin a transaction and take a lock the store's gc statement must wait for. */
	lock: string[];
	/** The expired rows in the table. */
	expiredRows(): Promise<number>;
}

/** Calls `close()` twice while the store's gc statement waits for the test's lock, then releases the lock. */
export async function assertCloseWaitsForGc({ makeStore, holder, lock, expiredRows }: BlockedGc): Promise<void> {
	const filler = makeStore(0);
	for (let i = 0; i < 3; i++) await filler.set(randomKey(), makeRecord(), Date.now() - 1000);
	await filler.close();
	let closedBeforeRelease: number;
	let closing: Promise<unknown>;
	try {
		for (const statement of lock) await holder.query(statement);
		let closed = 0;
		const store = makeStore(0.05);
		// The timer fires within this, and its DELETE waits for the lock.
		await sleep(300);
		// A second close() called meanwhile must wait as long as the first.
		closing = Promise.all([store.close(), store.close()].map((call) => call.then(() => closed++)));
		await sleep(300);
		closedBeforeRelease = closed;
	} finally {
		// Held on, the lock would keep the table from being dropped after the tests.
		await holder.query("COMMIT");
		holder.release();
	}
	await closing;
	assert.equal(closedBeforeRelease, 0, "close(), and a second close() called meanwhile, wait for the gc statement in flight");
	assert.equal(await expiredRows(), 0, "the statement in flight finished before close() resolved");
}
