import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { setImmediate as tick } from "node:timers/promises";
import v8 from "node:v8";
import vm from "node:vm";
import { memoryStore } from "sessionkit/stores/memory";
import { SessionConfigError } from "sessionkit";
import { randomKey } from "../helpers/keys.js";
import { makeRecord, storeConformance } from "sessionkit/testing";

/** A repeatable sequence of numbers in [0, 1) (a linear congruential generator), for the model tests. */
function seededRandom(seed: number): () => number {
	return () => {
		seed = (seed * 1103515245 + 12345) % 2147483648;
		return seed / 2147483648;
	};
}

storeConformance(
	"memory",
	async () => {
		const store = memoryStore();
		return { store, cleanup: async () => store.close!() };
	},
	{ merge: true, subjects: true, count: true, selfExpiring: false, expiryResolutionMs: 1 },
);

describe("memory store", () => {
	it("evicts the least recently used session past maxSessions", async () => {
		const store = memoryStore({ maxSessions: 3, sweepInterval: 0 });
		const [a, b, c, d] = [randomKey(), randomKey(), randomKey(), randomKey()];
		for (const key of [a, b, c]) await store.set(key, makeRecord(), Date.now() + 60_000);
		await store.get(a); // a is now the most recently used
		await store.set(d, makeRecord(), Date.now() + 60_000);
		assert.equal(store.size, 3);
		assert.equal(await store.get(b), null, "b was the least recently used");
		assert.ok(await store.get(a));
		assert.ok(await store.get(d));
	});

	it("keeps exactly the most recently used sessions through thousands of sets, gets, replaces and deletes", async () => {
		const max = 8;
		const store = memoryStore({ maxSessions: max, sweepInterval: 0 });
		const universe = Array.from({ length: 30 }, () => randomKey());
		// The model: keys from least to most recently used.
		const model: string[] = [];
		const use = (key: string) => {
			const at = model.indexOf(key);
			if (at >= 0) model.splice(at, 1);
			model.push(key);
		};
		const random = seededRandom(42);
		for (let step = 0; step < 5000; step++) {
			const key = universe[Math.floor(random() * universe.length)]!;
			const roll = random();
			if (roll < 0.4) {
				store.set(key, makeRecord(), Date.now() + 60_000);
				use(key);
				if (model.length > max) model.shift();
			} else if (roll < 0.7) {
				const found = store.get(key) !== null;
				assert.equal(found, model.includes(key), `step ${step}: get`);
				if (found) use(key);
			} else if (roll < 0.85) {
				const replaced = store.replace(key, makeRecord(), Date.now() + 60_000);
				assert.equal(replaced, model.includes(key), `step ${step}: replace`);
				if (replaced) use(key);
			} else {
				store.delete(key);
				if (model.includes(key)) model.splice(model.indexOf(key), 1);
			}
			assert.equal(store.size, model.length, `step ${step}: size`);
		}
		for (const key of universe.filter((k) => !model.includes(k))) assert.equal(store.get(key), null);
		for (const key of [...model]) assert.ok(store.get(key), "a key the model keeps");
		await store.close!();
	});

	it("evicts an expired session not yet swept before a live one past maxSessions", () => {
		let now = 1_000_000;
		const store = memoryStore({ maxSessions: 3, sweepInterval: 0, clock: () => now });
		const [short, a, b, c] = [randomKey(), randomKey(), randomKey(), randomKey()];
		store.set(short, makeRecord(), now + 1000);
		store.set(a, makeRecord(), now + 60_000);
		store.set(b, makeRecord(), now + 60_000);
		store.get(short); // the expiring session is now the most recently used
		now += 2000;
		store.set(c, makeRecord(), now + 60_000);
		assert.equal(store.size, 3);
		assert.ok(store.get(a), "a live session was evicted while an expired one kept its slot");
		assert.ok(store.get(b));
		assert.ok(store.get(c));
		assert.equal(store.get(short), null);
		store.close!();
	});

	it("counts an expiry extended by touch, replace or set, not the one the session had before", () => {
		let now = 1_000_000;
		const store = memoryStore({ maxSessions: 3, sweepInterval: 0, clock: () => now });
		const [touched, replaced, reset, d] = [randomKey(), randomKey(), randomKey(), randomKey()];
		for (const key of [touched, replaced, reset]) store.set(key, makeRecord(), now + 1000);
		store.touch(touched, now + 60_000, now + 60_000);
		store.replace(replaced, makeRecord(), now + 60_000);
		store.set(reset, makeRecord(), now + 60_000);
		now += 2000;
		assert.equal(store.gc!(), 0, "no session has expired");
		store.set(d, makeRecord(), now + 60_000);
		assert.equal(store.get(touched), null, "past maxSessions the least recently used goes");
		for (const key of [replaced, reset, d]) assert.ok(store.get(key));
		store.close!();
	});

	it("past maxSessions drops expired sessions first, and otherwise the least recently used, through thousands of random calls", () => {
		const max = 8;
		let now = 1_000_000;
		const store = memoryStore({ maxSessions: max, sweepInterval: 0, clock: () => now });
		const universe = Array.from({ length: 30 }, () => randomKey());
		// The model: key → expiry, from least to most recently used.
		const model = new Map<string, number>();
		const use = (key: string, expiresAt: number) => {
			model.delete(key);
			model.set(key, expiresAt);
		};
		const isLive = (key: string) => (model.get(key) ?? 0) > now;
		const random = seededRandom(7);
		for (let step = 0; step < 5000; step++) {
			const key = universe[Math.floor(random() * universe.length)]!;
			const roll = random();
			const expiresAt = now + 1 + Math.floor(random() * 200);
			if (roll < 0.35) {
				store.set(key, makeRecord(), expiresAt);
				use(key, expiresAt);
				if (model.size > max) {
					for (const [k] of model) if (!isLive(k)) model.delete(k);
					if (model.size > max) model.delete(model.keys().next().value!);
				}
			} else if (roll < 0.6) {
				const found = store.get(key) !== null;
				assert.equal(found, isLive(key), `step ${step}: get`);
				if (found) use(key, model.get(key)!);
				else model.delete(key);
			} else if (roll < 0.75) {
				const live = isLive(key);
				store.touch(key, expiresAt, expiresAt);
				if (live) model.set(key, expiresAt);
				else model.delete(key);
			} else if (roll < 0.85) {
				store.delete(key);
				model.delete(key);
			} else {
				now += Math.floor(random() * 50);
			}
		}
		for (const key of universe) assert.equal(store.get(key) !== null, isLive(key), "the store keeps the live sessions the model keeps");
		store.close!();
	});

	it("keeps sessions whose expiry 100k merges and touches moved later, then sweeps and evicts by their last expiry", () => {
		let now = 1_000_000;
		const store = memoryStore({ maxSessions: 10, sweepInterval: 0, clock: () => now });
		const keys = Array.from({ length: 10 }, () => randomKey());
		for (const key of keys) store.set(key, makeRecord(), now + 1000);
		const increment = (idleExpiresAt: number) => ({ clear: false, delete: [], set: {}, increment: { count: 1 }, flashDelete: [], flashSet: {}, subject: undefined, idleExpiresAt });
		// The counter route: every request moves its session's expiry a little later.
		for (let request = 0; request < 100_000; request++) {
			now += 1;
			const key = keys[request % keys.length]!;
			if (Math.floor(request / keys.length) % 2 === 0) assert.ok(store.merge!(key, increment(now + 1000), now + 1000));
			else store.touch(key, now + 1000, now + 1000);
			if (request % 1000 === 0) assert.equal(store.gc!(), 0, `request ${request}: no session has expired`);
		}
		// Last expiries: keys[i] at now - 9 + i + 1000.
		assert.equal(store.gc!(), 0, "every session's first expiry passed long ago, but none has expired");
		assert.equal(store.size, 10);
		assert.equal(JSON.parse(store.get(keys[3]!)!.data.count!), 5000);
		now += 1000 - 9 + 4; // keys[0..4] have expired, keys[5..9] have not
		const newcomer = randomKey();
		store.set(newcomer, makeRecord(), now + 1000);
		assert.equal(store.size, 6, "past maxSessions the expired sessions went first");
		for (const key of keys.slice(5)) assert.ok(store.get(key), "a live session was dropped");
		now += 5;
		assert.equal(store.gc!(), 5, "the rest expire at their last expiry");
		assert.equal(store.size, 1);
		store.close!();
	});

	it("sweeps a session at an expiry moved earlier after many later ones", () => {
		let now = 1_000_000;
		const store = memoryStore({ maxSessions: 10, sweepInterval: 0, clock: () => now });
		const [early, steady] = [randomKey(), randomKey()];
		for (const key of [early, steady]) store.set(key, makeRecord(), now + 1000);
		for (let i = 1; i <= 1000; i++) store.touch(early, now + 1000 + i, now + 1000 + i);
		store.touch(early, now + 10, now + 10);
		now += 11;
		assert.equal(store.gc!(), 1);
		assert.equal(store.size, 1);
		assert.ok(store.get(steady));
		store.close!();
	});

	it("sweeps and evicts correctly, and lets go of the keys, after 200k sessions created and deleted before they expire", async () => {
		v8.setFlagsFromString("--expose-gc");
		const gc = vm.runInNewContext("gc") as () => void;
		let now = 1_000_000;
		const store = memoryStore({ maxSessions: 20, sweepInterval: 0, clock: () => now });
		const kept = Array.from({ length: 10 }, () => randomKey());
		for (const key of kept) store.set(key, makeRecord(), now + 1000);
		// Moved later, so the churn below finds them queued at an expiry they no longer have.
		for (const [i, key] of kept.entries()) store.touch(key, now + 2000 + i, now + 2000 + i);
		await tick();
		gc();
		const heapBefore = process.memoryUsage().heapUsed;
		// renew() on every request: a new session replaces the old one long before either expires.
		const prefix = randomKey().slice(0, 52);
		let current = prefix + "0".padStart(12, "0");
		store.set(current, makeRecord(), now + 5000);
		for (let request = 1; request <= 200_000; request++) {
			const next = prefix + String(request).padStart(12, "0");
			store.set(next, makeRecord(), now + 5000);
			store.delete(current);
			current = next;
		}
		await tick();
		gc();
		// 200k deleted 64-character keys, were they all still queued, would hold over 15 MB.
		assert.ok(process.memoryUsage().heapUsed - heapBefore < 5_000_000, "the deleted sessions' keys are still held");
		assert.equal(store.size, 11);
		now += 2000 + 5; // kept[0..5] have expired
		assert.equal(store.gc!(), 6);
		for (const key of kept.slice(6)) assert.ok(store.get(key));
		assert.ok(store.get(current));
		store.close!();
	});

	it("sweeps expired sessions so memory does not grow without limit", async () => {
		let now = 1_000_000;
		const store = memoryStore({ sweepInterval: 0, clock: () => now });
		for (let i = 0; i < 50; i++) await store.set(randomKey(), makeRecord(), now + 1000);
		assert.equal(store.size, 50);
		now += 1001;
		assert.equal(await store.gc!(), 50);
		assert.equal(store.size, 0);
	});

	it("refuses a bad maxSessions or sweepInterval at construction", () => {
		assert.throws(() => memoryStore({ maxSessions: 0 }), SessionConfigError);
		assert.throws(() => memoryStore({ sweepInterval: -1 }), SessionConfigError);
		// setInterval would clamp a delay past 2^31-1 ms to 1 ms: a sweep every millisecond.
		assert.throws(() => memoryStore({ sweepInterval: 30 * 24 * 3600 }), (error: unknown) => error instanceof SessionConfigError && /sweepInterval/.test(error.message));
		memoryStore({ sweepInterval: 2147483 }).close?.();
	});

	it("refuses an option it does not know (a typo would otherwise do nothing), naming it and the known ones", () => {
		assert.throws(
			() => memoryStore({ maxSesions: 5 } as never),
			(error: unknown) =>
				error instanceof SessionConfigError &&
				error.option === "maxSesions" &&
				error.message === 'sessionkit: option "maxSesions" is not an option of memoryStore. Known: maxSessions, sweepInterval, clock.',
		);
		memoryStore({ maxSessions: 5, sweepInterval: 0, clock: undefined }).close!();
	});

	it("refuses a clock that is not a function at construction, not at the first sweep", () => {
		// Unchecked, it threw a TypeError from the first lookup, or from the sweep timer: an uncaught exception.
		assert.throws(() => memoryStore({ clock: 5 as unknown as () => number }), (error: unknown) => error instanceof SessionConfigError && /clock/.test(error.message));
	});

	for (const workload of ["reads", "writes"] as const) {
		it(`lets a deleted session be garbage-collected after many ${workload} below maxSessions`, async () => {
			v8.setFlagsFromString("--expose-gc");
			const gc = vm.runInNewContext("gc") as () => void;
			const store = memoryStore({ maxSessions: 1000, sweepInterval: 0 });
			const others = Array.from({ length: 50 }, () => randomKey());
			for (const key of others) store.set(key, makeRecord(), Date.now() + 60_000);
			const gone = randomKey();
			store.set(gone, makeRecord(), Date.now() + 60_000);
			const weak = new WeakRef(store.get(gone)!);
			// Each read moves a key to the Map's end and each write adds one: V8 rebuilds the Map's
			// table many times over while `gone` is still held.
			for (let i = 0; i < 100; i++) {
				for (const key of others) {
					if (workload === "reads") store.get(key);
					else {
						store.delete(key);
						store.set(key, makeRecord(), Date.now() + 60_000);
					}
				}
			}
			store.delete(gone);
			await tick();
			gc();
			await tick();
			gc();
			assert.equal(weak.deref(), undefined, "the deleted session's record is still reachable");
			store.close!();
		});
	}
});
