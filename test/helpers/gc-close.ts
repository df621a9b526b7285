/**
 * `close()` and the gc timer of a store on a database the app shares: a gc statement in flight
 * when `close()` is called finishes before `close()` resolves, so nothing of the store runs after.
 */
import assert from "node:assert/strict";
import { sleep } from "./keys.js";

export interface BlockedGc {
	/** A store with the gc timer on (a short `gcInterval`), on a table that holds expired rows. */
	store: { close(): Promise<void> };
	/** Releases the lock the test holds, which keeps the store's gc statement waiting. */
	release(): Promise<void>;
	/** The expired rows still in the table. */
	expiredRows(): Promise<number>;
}

/** Calls `close()` while the store's gc statement waits for the test's lock, then releases the lock. */
export async function assertCloseWaitsForGc({ store, release, expiredRows }: BlockedGc): Promise<void> {
	// The timer fires within this, and its DELETE waits for the lock.
	await sleep(300);
	let closed = false;
	const closing = store.close().then(() => {
		closed = true;
	});
	let closedBeforeRelease: boolean;
	try {
		await sleep(300);
		closedBeforeRelease = closed;
	} finally {
		// Held on, the lock would keep the table from being dropped after the tests.
		await release();
	}
	await closing;
	assert.equal(closedBeforeRelease, false, "close() waits for the gc statement in flight");
	assert.equal(await expiredRows(), 0, "the statement in flight finished before close() resolved");
}
