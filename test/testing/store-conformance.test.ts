/**
 * `sessionkit/testing` as a store author uses it: the suite runs under another test framework
 * through `runner`, passes a correct store, and fails a store that breaks the contract.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import type { SessionStore } from "sessionkit";
import { memoryStore } from "sessionkit/stores/memory";
import { storeConformance } from "sessionkit/testing";
import type { StoreCapabilities, TestRunner } from "sessionkit/testing";

type Body = () => Promise<void> | void;

/** A test framework of the least kind: it collects the suite, then runs it in order. */
function recordingRunner() {
	const tests: Array<{ name: string; body: Body }> = [];
	const befores: Body[] = [];
	const afters: Body[] = [];
	const skipped: string[] = [];
	const path: string[] = [];
	const runner: TestRunner = {
		describe(name, body) {
			path.push(name);
			body();
			path.pop();
		},
		it(name, body) {
			tests.push({ name: [...path, name].join(" > "), body });
		},
		before: (body) => befores.push(body),
		after: (body) => afters.push(body),
		skip: (name) => skipped.push(name),
	};
	async function run(): Promise<{ passed: string[]; failed: Map<string, unknown> }> {
		const passed: string[] = [];
		const failed = new Map<string, unknown>();
		for (const body of befores) await body();
		try {
			for (const test of tests) {
				try {
					await test.body();
					passed.push(test.name);
				} catch (error) {
					failed.set(test.name, error);
				}
			}
		} finally {
			for (const body of afters) await body();
		}
		return { passed, failed };
	}
	return { runner, run, skipped, tests };
}

const MEMORY: StoreCapabilities = { merge: true, subjects: true, count: true, selfExpiring: false, expiryResolutionMs: 1 };

function fixture(store: SessionStore) {
	return async () => ({ store, cleanup: async () => void (await store.close?.()) });
}

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
});
