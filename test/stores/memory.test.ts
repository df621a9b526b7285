import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { memoryStore } from "sessionkit/stores/memory";
import { SessionConfigError } from "sessionkit";
import { randomKey } from "../helpers/keys.js";
import { makeRecord, storeConformance } from "../store-conformance.js";

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
	});
});
