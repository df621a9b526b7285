/**
 * `sessionkit/testing` as a store author uses it: the suite runs under another test framework
 * through `runner`, passes a correct store, and fails a store that breaks the contract.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import type { SessionStore } from "sessionkit";
import { memoryStore } from "sessionkit/stores/memory";
import { storeConformance } from "sessionkit/testing";
import type { StoreCapabilities } from "sessionkit/testing";
import { brokenStore } from "./broken-store.js";
import type { Bug } from "./broken-store.js";
import { failuresOf, fixture, recordingRunner } from "./recording-runner.js";

const MEMORY: StoreCapabilities = { merge: true, subjects: true, count: true, selfExpiring: false, expiryResolutionMs: 1 };

describe("sessionkit/testing", () => {
	it("runs the whole suite under another framework's runner, and a correct store passes every test", async () => {
		const { runner, run, tests } = recordingRunner();
		storeConformance("memory", fixture(memoryStore({ sweepInterval: 0 })), MEMORY, { runner });
		const { passed, failed } = await run();
		assert.deepEqual([...failed.keys()], []);
		assert.equal(passed.length, tests.length);
		assert.ok(passed.length >= 30, `${passed.length} tests ran`);
		assert.ok(passed.some((name) => name.startsWith("store conformance: memory > merge > ")), "the merge tests ran");
		assert.ok(passed.some((name) => name.startsWith("store conformance: memory > subjects > ")), "the subject tests ran");
	});

	it("fails a store whose replace brings a deleted session back", async () => {
		const inner = memoryStore({ sweepInterval: 0 });
		const broken: SessionStore = Object.assign(Object.create(inner) as SessionStore, {
			replace: async (key: string, record: Parameters<SessionStore["set"]>[1], expiresAt: number) => {
				await inner.set(key, record, expiresAt);
				return true;
			},
		});
		const { runner, run } = recordingRunner();
		storeConformance("broken", fixture(broken), MEMORY, { runner });
		const { failed } = await run();
		assert.ok(
			[...failed.keys()].some((name) => name.includes("replace writes only over a live record")),
			`failed: ${[...failed.keys()].join("; ")}`,
		);
	});

	it("fails a store that has an optional method its capabilities leave out", async () => {
		const { runner, run } = recordingRunner();
		storeConformance("undeclared merge", fixture(memoryStore({ sweepInterval: 0 })), { ...MEMORY, merge: false }, { runner });
		const { failed } = await run();
		const names = [...failed.keys()];
		assert.ok(names.some((name) => name.includes("has exactly the optional methods its capabilities declare")), `failed: ${names.join("; ")}`);
	});

	it("a skipped suite is reported through the runner's skip with its reason, and nothing runs", async () => {
		const { runner, skipped, tests } = recordingRunner();
		let built = false;
		storeConformance("remote", async () => {
			built = true;
			throw new Error("unreachable");
		}, MEMORY, { runner, skip: "no server here" });
		assert.deepEqual(skipped, ["store conformance: remote (no server here)"]);
		assert.equal(tests.length, 0);
		assert.equal(built, false);
	});

	// Each bug, in a store otherwise correct, fails the suite in the test that names it. The first
	// group passed the suite before those tests were written.
	const caughtBy: Array<[Bug, string, { merge?: boolean }?]> = [
		["replace-revives-expired", "once a record's deadline has passed, no write brings it back"],
		["merge-revives-expired", "once a record's deadline has passed, no write brings it back"],
		["touch-revives-expired", "once a record's deadline has passed, no write brings it back"],
		["list-includes-expired", "once a record's deadline has passed, no write brings it back"],
		["delete-by-subject-counts-expired", "once a record's deadline has passed, no write brings it back"],
		["count-includes-expired", "once a record's deadline has passed, no write brings it back"],
		["count-never-decreases", "counts live sessions"],
		["set-keeps-expiry", "a second set, replace and merge move the deadline"],
		["replace-keeps-expiry", "a second set, replace and merge move the deadline"],
		["merge-keeps-expiry", "a second set, replace and merge move the deadline"],
		["gc-uses-first-expiry", "a second set, replace and merge move the deadline"],
		["touch-rewrites-stale", "touch in parallel with writes keeps every write"],
		["touch-rewrites-stale", "touch in parallel with writes keeps every write", { merge: false }],
		["touch-writes-cached", "touch changes only the idle deadline"],
		["touch-drops-flash-and-subject", "touch changes only the idle deadline"],
		["list-matches-prefix", "subjects > matches a subject exactly"],
		["list-ignores-case", "subjects > matches a subject exactly"],
		["list-stale-idle", "subjects > lists each session's key and instants as stored"],
		["list-wrong-created", "subjects > lists each session's key and instants as stored"],
		["set-keeps-old-subject-index", "subjects > a second set, a write and a delete keep the subject listing in step"],
		["merge-ignores-null-subject", "merge > subject undefined leaves the subject as it was, null removes it"],
		["merge-clears-subject", "merge > subject undefined leaves the subject as it was, null removes it"],
		["merge-path-keys", "merge > merges keys of any spelling"],
		["merge-mutates-changes", "merge > leaves the changes it is given as they were"],
		["merge-consumes-set", "merge > leaves the changes it is given as they were"],
		["increment-saturates", "merge > merges a sum past a double's range"],
		["set-keeps-reference", "set and replace keep a copy"],
		["set-mutates-input", "set and replace keep a copy"],
		["mutates-returned-record", "a record get returned is not changed by later writes"],
		["close-not-idempotent", "after"],
		// Caught before.
		["never-expires", "never returns a record past its expiry"],
		["get-returns-expired", "never returns a record past its expiry"],
		["replace-resurrects", "replace writes only over a live record"],
		["merge-resurrects", "merge > resolves false and writes nothing when the record is gone"],
		["merge-not-atomic", "merge > keeps every one of 20 parallel increments of one key"],
		["merge-increment-before-set", "merge > applies changes that name the same key in the documented order"],
		["merge-flash-order", "merge > applies changes that name the same key in the documented order"],
		["increment-decimal", "merge > adds as JavaScript numbers do"],
		["delete-by-subject-misses-one", "subjects > lists and deletes every live session of a subject"],
		["gc-deletes-soon", "gc() removes expired records"],
		["delete-missing-throws", "deletes a record, and deleting twice or deleting a missing key is not an error"],
		["claims-synchronous", "serves a full session life cycle through createSessions"],
	];
	const capabilitiesOf = (merge: boolean): StoreCapabilities => ({ merge, subjects: true, count: true, selfExpiring: false, expiryResolutionMs: 1 });

	describe("fails a store with one bug, in the test for it", { concurrency: 8 }, () => {
		for (const merge of [true, false]) {
			it(`passes the same store with no bug (${merge ? "with" : "without"} merge): asynchronous answers, a copy per call`, async () => {
				const failed = await failuresOf(brokenStore("none", { merge }), capabilitiesOf(merge));
				assert.deepEqual([...failed].map(([name, error]) => `${name}: ${String(error)}`), []);
			});
		}
		for (const [bug, test, options] of caughtBy) {
			const merge = options?.merge ?? true;
			it(`${bug}${merge ? "" : " (without merge)"}: fails "${test}"`, async () => {
				const failed = await failuresOf(brokenStore(bug, { merge }), capabilitiesOf(merge));
				const names = [...failed.keys()].map((name) => name.replace(/^store conformance: [^>]+> /, ""));
				assert.ok(names.some((name) => name.startsWith(test)), `failed: ${names.join("; ") || "nothing"}`);
			});
		}
	});
});
