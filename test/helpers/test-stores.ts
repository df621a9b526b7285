/**
 * Stores for adapter edge-case tests. Real stores only: the memory store, the file store on a
 * temporary directory, and a memory store behind a connection that can drop.
 */
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { TestContext } from "node:test";
import type { SessionStore } from "sessionkit";
import { fileStore } from "sessionkit/stores/file";
import { memoryStore } from "sessionkit/stores/memory";

/** The memory store answers synchronously; the file store waits for the disk. */
export const STORE_KINDS = ["memory", "file"] as const;

export type StoreKind = (typeof STORE_KINDS)[number];

/** A fresh store of `kind`, removed (with its directory) after the test; `clock` is the file store's. */
export async function storeOf(kind: StoreKind, t: TestContext, options: { clock?: () => number } = {}): Promise<SessionStore> {
	if (kind === "memory") return memoryStore({ sweepInterval: 0 });
	const dir = await mkdtemp(join(tmpdir(), "sessionkit-test-"));
	const store = fileStore({ dir, gcInterval: 0, clock: options.clock });
	t.after(async () => {
		await store.close();
		await rm(dir, { recursive: true, force: true });
	});
	return store;
}

export type FailureMode = "none" | "writes" | "all";

/**
 * A store that really fails: it keeps sessions in a memory store, and while `failing` says so
 * its methods reject with `new Error("down")` before touching them, as a store whose connection
 * dropped would. Not a mock of a database: a faulty store.
 */
export interface FaultyStore extends SessionStore {
	failing: FailureMode;
}

export function faultyStore(): FaultyStore {
	const inner = memoryStore({ sweepInterval: 0 });
	const check = (write: boolean): void => {
		if (store.failing === "all" || (write && store.failing === "writes")) throw new Error("down");
	};
	const store: FaultyStore = {
		name: "faulty",
		failing: "none",
		async get(key) {
			check(false);
			return inner.get(key);
		},
		async set(key, record, expiresAt) {
			check(true);
			return inner.set(key, record, expiresAt);
		},
		async replace(key, record, expiresAt) {
			check(true);
			return inner.replace(key, record, expiresAt);
		},
		async merge(key, changes, expiresAt) {
			check(true);
			return inner.merge!(key, changes, expiresAt);
		},
		async delete(key) {
			check(true);
			return inner.delete(key);
		},
		async touch(key, idleExpiresAt, expiresAt) {
			check(true);
			return inner.touch(key, idleExpiresAt, expiresAt);
		},
		close: () => inner.close!(),
	};
	return store;
}
