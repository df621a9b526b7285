/**
 * A test framework of the least kind, for running the conformance suite inside a test: it
 * collects the suite, then runs it in order and reports which tests passed and which failed.
 */
import type { SessionStore } from "sessionkit";
import { storeConformance } from "sessionkit/testing";
import type { StoreCapabilities, TestRunner } from "sessionkit/testing";

type Body = () => Promise<void> | void;

export function recordingRunner() {
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
			// As node's runner does, a failing after hook fails the suite: it is reported as a test.
			for (const body of afters) {
				try {
					await body();
				} catch (error) {
					failed.set("after", error);
				}
			}
		}
		return { passed, failed };
	}
	return { runner, run, skipped, tests };
}

export function fixture(store: SessionStore) {
	return async () => ({ store, cleanup: async () => void (await store.close?.()) });
}

/** Runs the whole suite against `store`: the names of the tests that failed, with their errors. */
export async function failuresOf(store: SessionStore, capabilities: StoreCapabilities): Promise<Map<string, unknown>> {
	const { runner, run } = recordingRunner();
	storeConformance(store.name, fixture(store), capabilities, { runner });
	return (await run()).failed;
}
