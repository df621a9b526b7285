/**
 * The check shared by the adapter suites for a change made to the session once the response has
 * answered (in a `res.on("finish")` listener, or a middleware above the session middleware after
 * `next()`): it must throw `SessionUsageError`, whether the answer was committed (a 200) or not (a
 * server error, whose changes are never committed), instead of being silently dropped.
 *
 * The app serves `/answer?status=N`: it changes the session, answers with status N, and calls
 * `late.attempt(session)` at the point after the answer.
 */
import assert from "node:assert/strict";
import { SessionUsageError } from "sessionkit";

export interface LateChange {
	/** Tries a change to `session` now, and records what happened. */
	attempt(session: { set(key: string, value: unknown): unknown }): void;
	/** What the next attempt did: the error it threw, or "saved" when it was taken. */
	next(): Promise<unknown>;
}

export function lateChange(): LateChange {
	const outcomes: unknown[] = [];
	const waiting: Array<(outcome: unknown) => void> = [];
	const record = (outcome: unknown): void => {
		const resolve = waiting.shift();
		if (resolve === undefined) outcomes.push(outcome);
		else resolve(outcome);
	};
	return {
		attempt(session) {
			try {
				session.set("late", true);
				record("saved");
			} catch (error) {
				record(error);
			}
		},
		next() {
			if (outcomes.length > 0) return Promise.resolve(outcomes.shift());
			return new Promise((resolve) => waiting.push(resolve));
		},
	};
}

/** After a 200 and after a 503 alike, a change made once the response answered throws `SessionUsageError`. */
export async function assertLateChangeRefused(url: string, late: LateChange): Promise<void> {
	for (const status of [200, 503]) {
		const reply = await fetch(`${url}/answer?status=${status}`);
		assert.equal(reply.status, status);
		await reply.arrayBuffer();
		const outcome = await late.next();
		assert.ok(outcome instanceof SessionUsageError, `after a ${status}: ${outcome instanceof Error ? outcome.message : String(outcome)}`);
	}
}
