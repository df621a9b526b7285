/**
 * The executable form of the `SessionStore` contract: one suite every store must pass against
 * its real backend, sessionkit's own stores and the ones apps write. A store's test is a few
 * lines: build the store, call `storeConformance`, then add tests that only that store needs.
 *
 * It runs under node's test runner by default; pass `runner` to run it under another one
 * (Vitest, Jest, Mocha: `{ describe, it, before: beforeAll, after: afterAll }`).
 *
 * @example
 * import { storeConformance } from "sessionkit/testing";
 * storeConformance("my store", async () => {
 *   const store = myStore();
 *   return { store, cleanup: () => store.close() };
 * }, { merge: true, subjects: true, count: true, selfExpiring: false, expiryResolutionMs: 1 });
 */
import assert from "node:assert/strict";
import { createHash, randomBytes } from "node:crypto";
import * as nodeTest from "node:test";
import type { RecordChanges, SessionStore, StoredRecord, SubjectSession } from "../index.js";
import { applyChanges, createSessions, defaultCodec, SessionError, SessionTooLargeError } from "../index.js";

export interface StoreCapabilities {
	/** The store implements `merge`: parallel commits keep each other's changes. */
	merge: boolean;
	/** The store implements `listBySubject` and `deleteBySubject`. */
	subjects: boolean;
	/** The store implements `count`. */
	count: boolean;
	/** The backend expires records by itself; if false, `gc()` must exist and is tested. */
	selfExpiring: boolean;
	/** Smallest expiry step the backend honours, in ms (1000 for memcached). */
	expiryResolutionMs: number;
}

export interface StoreFixture {
	store: SessionStore;
	/** Closes what the test opened (clients, pools, temp folders) and drops per-run tables or keys. */
	cleanup(): Promise<void>;
}

const HOUR = 3_600_000;

/** Every codec-supported type, non-ASCII and an emoji included. */
export const sampleValues: Record<string, unknown> = {
	string: "héllo wörld ✓ 🍪",
	number: 42.5,
	zero: 0,
	negative: -7,
	boolean: true,
	null: null,
	array: [1, "two", [3], { four: 4 }],
	object: { nested: { deep: ["x"] }, $t: "not a tag" },
	date: new Date("2026-01-02T03:04:05.678Z"),
	map: new Map<unknown, unknown>([["a", 1], [2, { b: true }]]),
	set: new Set(["x", "y", 3]),
	bigint: 12345678901234567890n,
	bytes: new Uint8Array([0, 1, 2, 254, 255]),
	quotes: `'"; DROP TABLE sessions; --`,
	newlines: "line1\nline2\r\n\u0000end",
};

export function makeRecord(overrides: Partial<StoredRecord> = {}): StoredRecord {
	const now = Date.now();
	return {
		data: { userId: defaultCodec.encode(123), name: defaultCodec.encode("Zoë") },
		flash: { notice: defaultCodec.encode("Welcome back") },
		createdAt: now,
		idleExpiresAt: now + HOUR,
		absoluteExpiresAt: now + 24 * HOUR,
		subject: null,
		...overrides,
	};
}

export function noChanges(overrides: Partial<RecordChanges> = {}): RecordChanges {
	return {
		clear: false,
		delete: [],
		set: {},
		increment: {},
		flashDelete: [],
		flashSet: {},
		subject: undefined,
		idleExpiresAt: Date.now() + HOUR,
		...overrides,
	};
}

function decodeAll(data: Record<string, string>): Record<string, unknown> {
	return Object.fromEntries(Object.entries(data).map(([k, v]) => [k, defaultCodec.decode(v)]));
}

/**
 * The four functions of a test framework the suite calls. Node's test runner by default; for
 * Vitest or Jest pass `{ describe, it, before: beforeAll, after: afterAll }`.
 */
export interface TestRunner {
	describe(name: string, body: () => void): unknown;
	it(name: string, body: () => Promise<void> | void): unknown;
	/** Runs once before the suite's tests (`beforeAll` in Vitest and Jest). */
	before(body: () => Promise<void> | void): unknown;
	/** Runs once after them (`afterAll`). */
	after(body: () => Promise<void> | void): unknown;
	/** Reports a skipped test (`(name) => it.skip(name, () => {})`); without it a skipped suite registers nothing. */
	skip?(name: string): unknown;
}

export interface ConformanceOptions {
	/**
	 * Why the suite cannot run here (its server is not reachable, say): the suite is reported as
	 * skipped with this reason instead of failing.
	 */
	skip?: string;
	/** @default node's test runner (`node:test`) */
	runner?: TestRunner;
}

const nodeRunner: TestRunner = {
	describe: (name, body) => nodeTest.describe(name, body),
	it: (name, body) => nodeTest.it(name, body),
	before: (body) => nodeTest.before(body),
	after: (body) => nodeTest.after(body),
};

/** Random bytes hashed: a key of the real shape (64 hex characters), unique per call. */
function randomKey(): string {
	return createHash("sha256").update(randomBytes(32)).digest("hex");
}

function sleep(ms: number): Promise<void> {
	return new Promise((resolve) => setTimeout(resolve, ms));
}

/** `value` frozen all the way down, as the core's shared empty parts of `RecordChanges` are. */
function deepFreeze<T>(value: T): T {
	if (typeof value === "object" && value !== null && !Object.isFrozen(value)) {
		Object.freeze(value);
		for (const inner of Object.values(value)) deepFreeze(inner);
	}
	return value;
}

/** The parts of a listed session the contract names, whatever else a store adds. */
function listed(sessions: SubjectSession[]): SubjectSession[] {
	return sessions.map(({ key, createdAt, idleExpiresAt, absoluteExpiresAt }) => ({ key, createdAt, idleExpiresAt, absoluteExpiresAt }));
}

/**
 * Registers the conformance suite for one store. `makeStore` runs once, before the tests; the
 * fixture's `cleanup` once, after them. `capabilities` says which optional parts of the
 * contract the store implements: those are tested, and the store must not have the others
 * (the manager uses a method because it is there).
 */
export function storeConformance(
	name: string,
	makeStore: () => Promise<StoreFixture>,
	capabilities: StoreCapabilities,
	options: ConformanceOptions = {},
): void {
	const title = `store conformance: ${name}`;
	if (options.skip !== undefined && options.runner === undefined) {
		nodeTest.describe(title, { skip: options.skip }, () => {});
		return;
	}
	const { describe, it, before, after, skip } = options.runner ?? nodeRunner;
	if (options.skip !== undefined) {
		skip?.(`${title} (${options.skip})`);
		return;
	}
	describe(title, () => {
		let store: SessionStore;
		let fixture: StoreFixture;
		const ttl = Math.max(400, capabilities.expiryResolutionMs * 2);
		const expiryWait = ttl + capabilities.expiryResolutionMs + 300;

		/** A later write of an existing session, as the core commits one: `changes` merged, or without merge the whole `record` replaced. */
		function laterWrite(key: string, changes: RecordChanges, record: StoredRecord, expiresAt: number): Promise<boolean> {
			return Promise.resolve(capabilities.merge ? store.merge!(key, changes, expiresAt) : store.replace(key, record, expiresAt));
		}

		before(async () => {
			fixture = await makeStore();
			store = fixture.store;
			// Warm the connection so the first timing-sensitive test does not pay for it.
			await store.get(randomKey());
		});
		after(async () => {
			await fixture?.cleanup();
			// The fixture's cleanup has usually closed the store already: closing it again, as an app's
			// shutdown hooks may, must be a no-op.
			if (store && typeof store.close === "function") {
				for (const call of ["a second", "a third"]) {
					try {
						await store.close();
					} catch (error) {
						assert.fail(`close() rejected on ${call} call (it must be idempotent): ${String(error)}`);
					}
				}
			}
		});

		it("has a name for error messages", () => {
			assert.equal(typeof store.name, "string");
			assert.ok(store.name.length > 0);
		});

		it("has exactly the optional methods its capabilities declare", () => {
			const has = (method: keyof SessionStore) => typeof store[method] === "function";
			assert.equal(has("merge"), capabilities.merge, "merge: present exactly when capabilities.merge");
			assert.equal(has("listBySubject"), capabilities.subjects, "listBySubject: present exactly when capabilities.subjects");
			assert.equal(has("deleteBySubject"), capabilities.subjects, "deleteBySubject: present exactly when capabilities.subjects");
			assert.equal(has("count"), capabilities.count, "count: present exactly when capabilities.count");
		});

		it("returns null for a key it never stored", async () => {
			assert.equal(await store.get(randomKey()), null);
		});

		it("round-trips a record with every codec type, non-ASCII text and a subject", async () => {
			const key = randomKey();
			const data = Object.fromEntries(Object.entries(sampleValues).map(([k, v]) => [k, defaultCodec.encode(v)]));
			const record = makeRecord({ data, subject: "user-ü-1" });
			await store.set(key, record, record.idleExpiresAt);
			const loaded = await store.get(key);
			assert.ok(loaded, "the record comes back");
			assert.deepEqual(loaded, record);
			assert.deepEqual(decodeAll(loaded.data), sampleValues);
		});

		it("keeps a data or flash name \"__proto__\" as an ordinary key, never as a prototype", async () => {
			const key = randomKey();
			const data = JSON.parse('{"__proto__": "1", "plain": "2"}') as Record<string, string>;
			const flash = JSON.parse('{"__proto__": "3"}') as Record<string, string>;
			await store.set(key, makeRecord({ data, flash }), Date.now() + HOUR);
			const loaded = await store.get(key);
			assert.ok(loaded);
			assert.deepEqual(Object.entries(loaded.data).sort(), [["__proto__", "1"], ["plain", "2"]]);
			assert.deepEqual(Object.entries(loaded.flash), [["__proto__", "3"]]);
			assert.equal(Object.getPrototypeOf(loaded.data), Object.prototype);
			assert.equal(Object.getPrototypeOf(loaded.flash), Object.prototype);
		});

		it("keeps a subject of the longest length sessions allow (256 UTF-16 units), in any script", async () => {
			// "€" is 3 UTF-8 bytes: 768 in all; each astral emoji is 2 units and 4 bytes.
			for (const subject of ["€".repeat(256), "😀".repeat(128), `${randomKey().slice(0, 6)}${"x".repeat(250)}`]) {
				const key = randomKey();
				await store.set(key, makeRecord({ subject }), Date.now() + HOUR);
				assert.equal((await store.get(key))?.subject, subject);
				if (capabilities.subjects) assert.deepEqual((await store.listBySubject!(subject)).map((s) => s.key), [key]);
				await store.delete(key);
			}
		});

		it("round-trips an empty record", async () => {
			const key = randomKey();
			const record = makeRecord({ data: {}, flash: {} });
			await store.set(key, record, record.idleExpiresAt);
			assert.deepEqual(await store.get(key), record);
		});

		it("replaces a record on a second set", async () => {
			const key = randomKey();
			await store.set(key, makeRecord(), Date.now() + HOUR);
			const second = makeRecord({ data: { only: defaultCodec.encode("this") }, flash: {} });
			await store.set(key, second, second.idleExpiresAt);
			assert.deepEqual(await store.get(key), second);
		});

		it("set and replace keep a copy: the record given is left as it was, and later changes to it do not reach the store", async () => {
			const key = randomKey();
			const record = makeRecord({ subject: "copy" });
			const snapshot = structuredClone(record);
			await store.set(key, record, Date.now() + HOUR);
			assert.deepEqual(record, snapshot, "set changed the record it was given");
			record.data.userId = defaultCodec.encode(999);
			record.flash.notice = defaultCodec.encode("changed by the caller");
			record.subject = "changed";
			assert.deepEqual(await store.get(key), snapshot, "set kept the caller's object: a change the caller made after set reached the store");
			const next = makeRecord({ data: { v: "2" } });
			const nextSnapshot = structuredClone(next);
			assert.equal(await store.replace(key, next, Date.now() + HOUR), true);
			assert.deepEqual(next, nextSnapshot, "replace changed the record it was given");
			next.data.v = "3";
			assert.deepEqual(await store.get(key), nextSnapshot, "replace kept the caller's object: a change the caller made after replace reached the store");
		});

		it("a record get returned is not changed by later writes to its key", async () => {
			const key = randomKey();
			await store.set(key, makeRecord({ data: { userId: "1", n: "1" }, subject: "before" }), Date.now() + HOUR);
			const loaded = await store.get(key);
			assert.ok(loaded);
			const snapshot = structuredClone(loaded);
			const later = Date.now() + 2 * HOUR;
			await store.touch(key, later, later);
			await laterWrite(
				key,
				noChanges({ set: { added: "1" }, delete: ["userId"], increment: { n: 1 }, flashDelete: ["notice"], subject: "after", idleExpiresAt: later }),
				makeRecord({ data: { added: "1" }, subject: "after", idleExpiresAt: later }),
				later,
			);
			assert.deepEqual(loaded, snapshot, "a touch or a write changed in place a record that get had returned: a request holding it would see another request's changes");
		});

		it("keeps records of different keys apart", async () => {
			const a = randomKey();
			const b = randomKey();
			await store.set(a, makeRecord({ data: { who: defaultCodec.encode("a") } }), Date.now() + HOUR);
			await store.set(b, makeRecord({ data: { who: defaultCodec.encode("b") } }), Date.now() + HOUR);
			assert.equal((await store.get(a))?.data.who, defaultCodec.encode("a"));
			assert.equal((await store.get(b))?.data.who, defaultCodec.encode("b"));
		});

		it("deletes a record, and deleting twice or deleting a missing key is not an error", async () => {
			const key = randomKey();
			await store.set(key, makeRecord(), Date.now() + HOUR);
			await store.delete(key);
			assert.equal(await store.get(key), null);
			await store.delete(key);
			await store.delete(randomKey());
		});

		it("replace writes only over a live record, so a deleted session is never brought back", async () => {
			const key = randomKey();
			assert.equal(await store.replace(key, makeRecord(), Date.now() + HOUR), false);
			assert.equal(await store.get(key), null, "replace created a record it should not have");

			await store.set(key, makeRecord(), Date.now() + HOUR);
			const next = makeRecord({ data: { v: defaultCodec.encode(2) } });
			assert.equal(await store.replace(key, next, next.idleExpiresAt), true);
			assert.deepEqual(await store.get(key), next);

			await store.delete(key);
			assert.equal(await store.replace(key, next, next.idleExpiresAt), false);
			assert.equal(await store.get(key), null);
		});

		it("touch moves the idle deadline and keeps the data", async () => {
			const key = randomKey();
			const record = makeRecord();
			await store.set(key, record, record.idleExpiresAt);
			const idle = record.idleExpiresAt + 60_000;
			await store.touch(key, idle, idle);
			const loaded = await store.get(key);
			assert.ok(loaded);
			assert.equal(loaded.idleExpiresAt, idle);
			assert.deepEqual(loaded.data, record.data);
		});

		it("touch changes only the idle deadline, never data written after the last read", async () => {
			const key = randomKey();
			const record = makeRecord({ subject: `touch-${randomKey().slice(0, 8)}` });
			await store.set(key, record, record.idleExpiresAt);
			assert.ok(await store.get(key));
			// Written after that read: a touch must not put back a copy from before it.
			const written: StoredRecord = { ...record, data: { ...record.data, after: "1" }, flash: { ...record.flash, later: defaultCodec.encode("l") } };
			assert.equal(await laterWrite(key, noChanges({ set: { after: "1" }, flashSet: { later: written.flash.later! }, idleExpiresAt: record.idleExpiresAt }), written, record.idleExpiresAt), true);
			const idle = record.idleExpiresAt + 60_000;
			await store.touch(key, idle, idle);
			assert.deepEqual(await store.get(key), { ...written, idleExpiresAt: idle }, "touch rewrote more than the idle deadline (an older copy of the data or flash, the subject, or another instant)");
		});

		it("touch in parallel with writes keeps every write", async () => {
			const key = randomKey();
			const record = makeRecord({ data: {} });
			await store.set(key, record, Date.now() + HOUR);
			const data: Record<string, string> = {};
			for (let i = 0; i < 6; i++) {
				const idle = Date.now() + HOUR;
				data[`k${i}`] = String(i);
				const write = () => laterWrite(key, noChanges({ set: { [`k${i}`]: String(i) }, idleExpiresAt: idle }), { ...record, data: { ...data }, idleExpiresAt: idle }, idle);
				const touch = () => store.touch(key, idle, idle);
				await Promise.all(i % 2 === 0 ? [touch(), write()] : [write(), touch()]);
				assert.deepEqual((await store.get(key))?.data, data, "a touch wrote back a copy of the record read before a parallel write: touch must change only the deadlines");
			}
		});

		it("touch on a missing key creates nothing", async () => {
			const key = randomKey();
			await store.touch(key, Date.now() + HOUR, Date.now() + HOUR);
			assert.equal(await store.get(key), null);
		});

		it("never returns a record past its expiry, even before the backend reaps it", async () => {
			const key = randomKey();
			await store.set(key, makeRecord(), Date.now() + ttl);
			assert.ok(await store.get(key), "live before the deadline");
			await sleep(expiryWait);
			assert.equal(await store.get(key), null);
		});

		it("touch keeps a record alive past its first expiry", async () => {
			const key = randomKey();
			await store.set(key, makeRecord(), Date.now() + ttl);
			const later = Date.now() + HOUR;
			await store.touch(key, later, later);
			await sleep(expiryWait);
			assert.ok(await store.get(key), "touched record still live");
		});

		it("once a record's deadline has passed, no write brings it back and no listing or count includes it", async () => {
			const subject = `expired-${randomKey().slice(0, 8)}`;
			const [replaced, merged, touched, kept] = [randomKey(), randomKey(), randomKey(), randomKey()];
			const short = [replaced, merged, touched];
			for (const key of short) await store.set(key, makeRecord({ subject }), Date.now() + ttl);
			await store.set(kept, makeRecord({ subject }), Date.now() + HOUR);
			const counted = capabilities.count ? await store.count!() : 0;
			// Live after the count, so counted by it (a machine slow enough to pass the deadline first
			// leaves the count unchecked rather than failing a correct store).
			let countedAll = true;
			for (const key of short) if ((await store.get(key)) === null) countedAll = false;
			await sleep(expiryWait);
			if (capabilities.count && countedAll) {
				const now = await store.count!();
				assert.ok(now <= counted - short.length, `count() went from ${counted} to ${now} while ${short.length} of the sessions it counted passed their deadline: it counts expired records`);
			}
			const later = Date.now() + HOUR;
			assert.equal(await store.replace(replaced, makeRecord({ subject }), later), false, "replace resolved true for a record past its deadline");
			assert.equal(await store.get(replaced), null, "replace brought back a record past its deadline");
			if (capabilities.merge) {
				assert.equal(await store.merge!(merged, noChanges({ set: { a: "1" }, idleExpiresAt: later }), later), false, "merge resolved true for a record past its deadline");
				assert.equal(await store.get(merged), null, "merge brought back a record past its deadline");
			}
			await store.touch(touched, later, later);
			assert.equal(await store.get(touched), null, "touch brought back a record past its deadline");
			if (capabilities.subjects) {
				assert.deepEqual((await store.listBySubject!(subject)).map((s) => s.key), [kept], "listBySubject lists sessions past their deadline");
				const deleted = await store.deleteBySubject!(subject);
				assert.equal(deleted, 1, `deleteBySubject resolved ${deleted}: it must delete and count the one live session, and count none past its deadline`);
				assert.equal(await store.get(kept), null);
			}
		});

		it("a second set, replace and merge move the deadline, as touch does", async () => {
			const [overwritten, replaced, merged, touched] = [randomKey(), randomKey(), randomKey(), randomKey()];
			for (const key of [overwritten, replaced, merged, touched]) await store.set(key, makeRecord(), Date.now() + ttl);
			const later = Date.now() + HOUR;
			await store.set(overwritten, makeRecord({ data: { v: "2" } }), later);
			assert.equal(await store.replace(replaced, makeRecord({ data: { v: "2" } }), later), true);
			if (capabilities.merge) assert.equal(await store.merge!(merged, noChanges({ set: { v: "2" }, idleExpiresAt: later }), later), true);
			await store.touch(touched, later, later);
			await sleep(expiryWait);
			const check = async (fault: (what: string) => string) => {
				assert.ok(await store.get(overwritten), fault("a second set"));
				assert.ok(await store.get(replaced), fault("replace"));
				if (capabilities.merge) assert.ok(await store.get(merged), fault("merge"));
				assert.ok(await store.get(touched), fault("touch"));
			};
			await check((what) => `${what} did not move the deadline an hour ahead`);
			if (typeof store.gc === "function") {
				await store.gc();
				await check((what) => `gc() deleted a live record whose deadline ${what} had moved an hour ahead (a deadline kept from the first set?)`);
			}
		});

		it("does not store a record whose deadline has already passed", async () => {
			const key = randomKey();
			const past = Date.now() - 10_000;
			await store.set(key, makeRecord({ idleExpiresAt: past }), past);
			assert.equal(await store.get(key), null);
		});

		it("treats hostile keys as data: never a path, a query or another session", async () => {
			const real = randomKey();
			await store.set(real, makeRecord(), Date.now() + HOUR);
			const hostile = ["../../../../etc/passwd", "' OR '1'='1", "*", "?", "%", "{slot}", "a\u0000b", `${real}*`, real.toUpperCase(), "", " ".repeat(300)];
			for (const key of hostile) {
				try {
					assert.equal(await store.get(key), null, `get(${JSON.stringify(key)})`);
				} catch (error) {
					assert.ok(error instanceof SessionError || error instanceof Error, `rejects with an error, not a crash: ${String(error)}`);
				}
				try {
					await store.delete(key);
				} catch (error) {
					assert.ok(error instanceof Error);
				}
			}
			assert.ok(await store.get(real), "no hostile key touched the real record");
		});

		it("round-trips a large record (60 KiB)", async () => {
			const key = randomKey();
			const big = "x".repeat(30 * 1024) + "é".repeat(15 * 1024);
			const record = makeRecord({ data: { big: defaultCodec.encode(big) } });
			await store.set(key, record, record.idleExpiresAt);
			const loaded = await store.get(key);
			assert.equal(loaded?.data.big, record.data.big);
		});

		it("refuses, with a clear error, a session over the size limit", async () => {
			const sessions = createSessions({ store, maxSize: 1024 });
			const session = await sessions.load(undefined);
			session.set("big", "y".repeat(2000));
			await assert.rejects(async () => sessions.commit(session, { secure: false }), (error: unknown) => {
				assert.ok(error instanceof SessionTooLargeError);
				assert.equal(error.limit, 1024);
				assert.match(error.message, /1024/);
				return true;
			});
		});

		it("serves a full session life cycle through createSessions", async () => {
			const sessions = createSessions({ store });
			const first = await sessions.load(undefined);
			first.set("userId", 7);
			first.flash("notice", "hi");
			const { setCookie } = await sessions.commit(first, { secure: false });
			assert.ok(setCookie);
			const cookie = setCookie.split(";")[0]!;
			const second = await sessions.load(cookie);
			assert.equal(second.isNew, false);
			assert.equal(second.get("userId"), 7);
			assert.equal(second.flash("notice"), "hi");
			second.set("step", 2);
			await sessions.commit(second, { secure: false });
			const third = await sessions.load(cookie);
			assert.equal(third.get("step"), 2);
			assert.equal(third.hasFlash("notice"), false, "a flash read once is gone");
			third.destroy();
			await sessions.commit(third, { secure: false });
			assert.equal((await sessions.load(cookie)).isNew, true);
		});

		it("keeps a session's rememberMe choice through renew() and clear(), as data it never shows", async () => {
			const sessions = createSessions({ store });
			const cookieOf = (setCookie: string | null) => setCookie!.split(";")[0]!;
			const first = await sessions.load(undefined);
			first.set("userId", 7);
			first.rememberMe = true;
			const created = await sessions.commit(first, { secure: false });
			assert.match(created.setCookie!, /Max-Age=/);
			const renewing = await sessions.load(cookieOf(created.setCookie));
			renewing.renew();
			const renewed = await sessions.commit(renewing, { secure: false });
			const clearing = await sessions.load(cookieOf(renewed.setCookie));
			assert.equal(clearing.rememberMe, true);
			clearing.clear();
			clearing.set("after", 1);
			await sessions.commit(clearing, { secure: false });
			const seen = await sessions.load(cookieOf(renewed.setCookie));
			assert.equal(seen.rememberMe, true);
			assert.deepEqual(seen.all(), { after: 1 });
			seen.rememberMe = false;
			const forgotten = await sessions.commit(seen, { secure: false });
			assert.doesNotMatch(forgotten.setCookie!, /Max-Age/);
			assert.equal((await sessions.load(cookieOf(renewed.setCookie))).rememberMe, false);
		});

		if (capabilities.merge) {
			describe("merge", () => {
				it("applies set, delete, increment, flash and subject changes", async () => {
					const key = randomKey();
					await store.set(key, makeRecord({ data: { keep: defaultCodec.encode("k"), drop: defaultCodec.encode(1), n: defaultCodec.encode(5) }, flash: { old: defaultCodec.encode("o"), stay: defaultCodec.encode("s") } }), Date.now() + HOUR);
					const idle = Date.now() + 2 * HOUR;
					const ok = await store.merge!(key, noChanges({ delete: ["drop"], set: { added: defaultCodec.encode({ a: [1] }) }, increment: { n: 3, fresh: -2 }, flashDelete: ["old"], flashSet: { next: defaultCodec.encode("nxt") }, subject: "alice", idleExpiresAt: idle }), idle);
					assert.equal(ok, true);
					const loaded = await store.get(key);
					assert.ok(loaded);
					assert.deepEqual(decodeAll(loaded.data), { keep: "k", added: { a: [1] }, n: 8, fresh: -2 });
					assert.deepEqual(decodeAll(loaded.flash), { stay: "s", next: "nxt" });
					assert.equal(loaded.subject, "alice");
					assert.equal(loaded.idleExpiresAt, idle);
				});

				it("clear removes every data key before the other changes", async () => {
					const key = randomKey();
					await store.set(key, makeRecord({ data: { a: "1", b: "2" } }), Date.now() + HOUR);
					await store.merge!(key, noChanges({ clear: true, set: { c: "3" } }), Date.now() + HOUR);
					assert.deepEqual((await store.get(key))?.data, { c: "3" });
				});

				it("applies changes that name the same key in the documented order, as applyChanges does", async () => {
					for (const clear of [false, true]) {
						const key = randomKey();
						const record = makeRecord({ data: { a: "1", b: "2", c: "3" }, flash: { f: defaultCodec.encode("x") } });
						await store.set(key, record, Date.now() + HOUR);
						// a: deleted, set, then incremented; b: incremented from its stored value (0 after a clear);
						// d: set, then incremented; f: a flash read and set again in one request.
						const changes = noChanges({ clear, delete: ["a", "c"], set: { a: "10", d: "4" }, increment: { a: 1, b: 5, d: 1, e: 2 }, flashDelete: ["f"], flashSet: { f: defaultCodec.encode("y") } });
						assert.equal(await store.merge!(key, changes, Date.now() + HOUR), true);
						const loaded = await store.get(key);
						const expected = applyChanges(record, changes);
						assert.deepEqual(decodeAll(loaded!.data), decodeAll(expected.data), `clear: ${clear}`);
						assert.deepEqual(decodeAll(loaded!.flash), decodeAll(expected.flash), `clear: ${clear}`);
					}
				});

				it("merges keys of any spelling the core allows: path, quote, pattern and non-ASCII characters, the longest", async () => {
					const names = ["a.b", "$", "$.a", "a\"b", "a'b", "a\\b", "[0]", "*", "?", "%", "_", " ", "a b", "0", "-1", "{}", "a->b", "a#>b", "@x", "\u00e9", "e\u0301", "\u{1F36A}", "line\nbreak", "k".repeat(256)];
					const key = randomKey();
					const data = Object.fromEntries(names.map((name, i) => [name, String(i)]));
					const flash = Object.fromEntries(names.map((name) => [name, defaultCodec.encode(name)]));
					const record = makeRecord({ data, flash });
					await store.set(key, record, Date.now() + HOUR);
					assert.deepEqual(await store.get(key), record);
					// Half the names deleted, the other half incremented; each name set again in the flash.
					const deleted = names.filter((_, i) => i % 2 === 0);
					const incremented = names.filter((_, i) => i % 2 === 1);
					const changes = noChanges({
						delete: deleted,
						set: Object.fromEntries(deleted.map((name) => [`.${name}`.slice(0, 256), "1"])),
						increment: Object.fromEntries(incremented.map((name) => [name, 10])),
						flashDelete: deleted,
						flashSet: Object.fromEntries(incremented.map((name) => [name, defaultCodec.encode("again")])),
					});
					assert.equal(await store.merge!(key, changes, Date.now() + HOUR), true);
					const loaded = await store.get(key);
					const expected = applyChanges(record, changes);
					assert.deepEqual(loaded?.data, expected.data, "a merge of keys with special characters changed other keys or missed its own");
					assert.deepEqual(loaded?.flash, expected.flash, "a merge of flash keys with special characters changed other keys or missed its own");
				});

				it("merges 5000 keys set and 5000 deleted in one commit", async () => {
					const key = randomKey();
					const old = Object.fromEntries(Array.from({ length: 5000 }, (_, i) => [`old${i}`, String(i)]));
					await store.set(key, makeRecord({ data: { ...old, kept: "1" } }), Date.now() + HOUR);
					assert.equal(Object.keys((await store.get(key))!.data).length, 5001);
					const added = Object.fromEntries(Array.from({ length: 5000 }, (_, i) => [`new${i}`, String(i)]));
					assert.equal(await store.merge!(key, noChanges({ delete: Object.keys(old), set: added }), Date.now() + HOUR), true);
					assert.deepEqual((await store.get(key))!.data, { ...added, kept: "1" });
				});

				it("resolves false and writes nothing when the record is gone (no resurrection)", async () => {
					const key = randomKey();
					assert.equal(await store.merge!(key, noChanges({ set: { a: "1" } }), Date.now() + HOUR), false);
					assert.equal(await store.get(key), null);
					await store.set(key, makeRecord(), Date.now() + HOUR);
					await store.delete(key);
					assert.equal(await store.merge!(key, noChanges({ increment: { n: 1 } }), Date.now() + HOUR), false);
					assert.equal(await store.get(key), null);
				});

				it("adds as JavaScript numbers do (applyChanges): fractions, exponents and non-numbers", async () => {
					const key = randomKey();
					const data = { tenth: "0.2", padded: "1.50", exp: "1e3", big: "9007199254740993", text: defaultCodec.encode("abc"), huge: "1e400" };
					const record = makeRecord({ data });
					await store.set(key, record, Date.now() + HOUR);
					const changes = noChanges({ increment: { tenth: 0.1, padded: 1, exp: 0.5, big: 1, text: 2, huge: 1, fresh: 0.25 } });
					assert.equal(await store.merge!(key, changes, Date.now() + HOUR), true);
					const loaded = await store.get(key);
					assert.deepEqual(decodeAll(loaded!.data), decodeAll(applyChanges(record, changes).data));
					assert.equal(defaultCodec.decode(loaded!.data.tenth!), 0.2 + 0.1);
				});

				it("merges a sum past a double's range as applyChanges does: Infinity, not an error nor the largest double", async () => {
					const key = randomKey();
					const record = makeRecord({ data: { max: "1.7976931348623157e308", min: "-1.7976931348623157e308", kept: "1" } });
					await store.set(key, record, Date.now() + HOUR);
					const changes = noChanges({ increment: { max: 1.7976931348623157e308, min: -1.7976931348623157e308, kept: 1 } });
					assert.equal(await store.merge!(key, changes, Date.now() + HOUR), true, "a merge whose sum leaves a double's range must still apply");
					const loaded = await store.get(key);
					assert.equal(loaded?.data.kept, "2", "the other increments of that merge are applied");
					assert.deepEqual({ max: loaded?.data.max, min: loaded?.data.min }, { max: "Infinity", min: "-Infinity" }, "as JavaScript's String(n) writes a sum past the largest double");
				});

				it("subject undefined leaves the subject as it was, null removes it", async () => {
					const key = randomKey();
					const subject = `merge-${randomKey().slice(0, 8)}`;
					await store.set(key, makeRecord({ subject }), Date.now() + HOUR);
					assert.equal(await store.merge!(key, noChanges({ set: { a: "1" } }), Date.now() + HOUR), true);
					assert.equal((await store.get(key))?.subject, subject, "a merge whose subject is undefined changed the subject");
					assert.equal(await store.merge!(key, noChanges({ subject: null }), Date.now() + HOUR), true);
					assert.equal((await store.get(key))?.subject, null, "a merge whose subject is null did not remove the subject");
					if (capabilities.subjects) assert.deepEqual(await store.listBySubject!(subject), [], "a merge whose subject is null left the session listed under its old subject");
				});

				it("leaves the changes it is given as they were (read-only: the core shares frozen empty parts)", async () => {
					const key = randomKey();
					await store.set(key, makeRecord({ data: { a: "1", n: "1" } }), Date.now() + HOUR);
					const changes = deepFreeze(noChanges({ delete: ["a"], set: { b: "2" }, increment: { n: 1 }, flashDelete: ["notice"], flashSet: { f: "3" }, subject: "s" }));
					let ok: boolean;
					try {
						ok = await store.merge!(key, changes, Date.now() + HOUR);
					} catch (error) {
						assert.fail(`merge rejected frozen changes (it must not change them): ${String(error)}`);
					}
					assert.equal(ok, true);
					const loaded = await store.get(key);
					assert.deepEqual(loaded?.data, { b: "2", n: "2" });
					assert.deepEqual(loaded?.flash, { f: "3" });
				});

				it("keeps every one of 20 parallel increments of one key", async () => {
					const key = randomKey();
					await store.set(key, makeRecord({ data: {} }), Date.now() + HOUR);
					await Promise.all(Array.from({ length: 20 }, () => store.merge!(key, noChanges({ increment: { hits: 1 } }), Date.now() + HOUR)));
					assert.equal((await store.get(key))?.data.hits, "20");
				});

				it("keeps parallel writes to different keys", async () => {
					const key = randomKey();
					await store.set(key, makeRecord({ data: {} }), Date.now() + HOUR);
					await Promise.all(Array.from({ length: 10 }, (_, i) => store.merge!(key, noChanges({ set: { [`k${i}`]: String(i) } }), Date.now() + HOUR)));
					const data = (await store.get(key))?.data ?? {};
					assert.deepEqual(Object.keys(data).sort(), Array.from({ length: 10 }, (_, i) => `k${i}`).sort());
				});

				it("through createSessions, ten parallel requests incrementing one session add up to ten", async () => {
					const sessions = createSessions({ store });
					const first = await sessions.load(undefined);
					first.set("counter", 0);
					const cookie = (await sessions.commit(first, { secure: false })).setCookie!.split(";")[0]!;
					const loaded = await Promise.all(Array.from({ length: 10 }, () => sessions.load(cookie)));
					await Promise.all(loaded.map(async (s) => {
						s.increment("counter");
						await sessions.commit(s, { secure: false });
					}));
					assert.equal((await sessions.load(cookie)).get("counter"), 10);
				});
			});
		}

		it("a slower parallel request does not bring back a session destroyed or renewed before it commits", async () => {
			const events: string[] = [];
			const sessions = createSessions({ store, onEvent: (e) => events.push(e.type) });
			const first = await sessions.load(undefined);
			first.set("userId", 1);
			const cookie = (await sessions.commit(first, { secure: false })).setCookie!.split(";")[0]!;

			const destroyer = await sessions.load(cookie);
			const slow = await sessions.load(cookie);
			assert.equal(slow.get("userId"), 1, "the slow request has read the session before it is destroyed");
			destroyer.destroy();
			await sessions.commit(destroyer, { secure: false });
			slow.set("late", true);
			await sessions.commit(slow, { secure: false });
			assert.equal((await sessions.load(cookie)).isNew, true, "the destroyed session stays destroyed");
			assert.ok(events.includes("session-lost"), "the lost write is reported");

			const again = await sessions.load(undefined);
			again.set("userId", 2);
			const cookie2 = (await sessions.commit(again, { secure: false })).setCookie!.split(";")[0]!;
			const renewer = await sessions.load(cookie2);
			const slow2 = await sessions.load(cookie2);
			assert.equal(slow2.get("userId"), 2);
			renewer.renew();
			const renewed = (await sessions.commit(renewer, { secure: false })).setCookie!.split(";")[0]!;
			slow2.set("late", true);
			await sessions.commit(slow2, { secure: false });
			assert.equal((await sessions.load(cookie2)).isNew, true, "the old token stays dead");
			assert.equal((await sessions.load(renewed)).get("userId"), 2);
		});

		it("a slower renew (a login) does not bring back a session destroyed before it commits", async () => {
			const written: string[] = [];
			// Records the keys written, to look under the renewed session's key afterwards.
			const watched = new Proxy(store, {
				get(target, property, receiver) {
					const value = Reflect.get(target, property, receiver);
					if (property !== "set" || typeof value !== "function") return typeof value === "function" ? value.bind(target) : value;
					return (key: string, ...rest: unknown[]) => {
						written.push(key);
						return value.call(target, key, ...rest);
					};
				},
			});
			const sessions = createSessions({ store: watched });
			const first = await sessions.load(undefined);
			first.set("role", "admin");
			const cookie = (await sessions.commit(first, { secure: false })).setCookie!.split(";")[0]!;
			const login = await sessions.load(cookie);
			login.renew();
			const logout = await sessions.load(cookie);
			logout.destroy();
			await sessions.commit(logout, { secure: false });
			const late = await sessions.commit(login, { secure: false });
			assert.equal(late.setCookie, null, "no cookie: the renewed session does not exist");
			assert.equal(written.length, 2, "the first session and the renewed copy were written");
			assert.equal(await store.get(written[1]!), null, "nothing is left under the new key");
		});

		if (capabilities.subjects) {
			describe("subjects", () => {
				it("lists and deletes every live session of a subject, and only those", async () => {
					const alice = `alice-${randomKey().slice(0, 8)}`;
					const bob = `bob-${randomKey().slice(0, 8)}`;
					const [a1, a2, b1, aExpired] = [randomKey(), randomKey(), randomKey(), randomKey()];
					await store.set(a1, makeRecord({ subject: alice }), Date.now() + HOUR);
					await store.set(a2, makeRecord({ subject: alice }), Date.now() + HOUR);
					await store.set(b1, makeRecord({ subject: bob }), Date.now() + HOUR);
					await store.set(aExpired, makeRecord({ subject: alice }), Date.now() - 1000);
					const listed = await store.listBySubject!(alice);
					assert.deepEqual(listed.map((s) => s.key).sort(), [a1, a2].sort());
					for (const s of listed) {
						assert.equal(typeof s.createdAt, "number");
						assert.ok(s.idleExpiresAt > Date.now());
						assert.ok(s.absoluteExpiresAt > Date.now());
					}
					assert.equal(await store.deleteBySubject!(alice), 2);
					assert.equal(await store.get(a1), null);
					assert.equal(await store.get(a2), null);
					assert.ok(await store.get(b1), "another subject's session is untouched");
					assert.deepEqual(await store.listBySubject!(alice), []);
				});

				it("lists each session's key and instants as stored, and the idle deadline a touch or a write moved", async () => {
					const subject = `instants-${randomKey().slice(0, 8)}`;
					const key = randomKey();
					const record = makeRecord({ subject, createdAt: Date.now() - 5000 });
					await store.set(key, record, record.idleExpiresAt);
					const expected = { key, createdAt: record.createdAt, idleExpiresAt: record.idleExpiresAt, absoluteExpiresAt: record.absoluteExpiresAt };
					assert.deepEqual(listed(await store.listBySubject!(subject)), [expected], "listBySubject does not report the session's key, createdAt, idleExpiresAt and absoluteExpiresAt as stored");
					const touched = record.idleExpiresAt + 60_000;
					await store.touch(key, touched, touched);
					assert.deepEqual(listed(await store.listBySubject!(subject)), [{ ...expected, idleExpiresAt: touched }], "listBySubject reports the idle deadline from before a touch");
					const written = touched + 60_000;
					await laterWrite(key, noChanges({ set: { a: "1" }, idleExpiresAt: written }), { ...record, idleExpiresAt: written }, written);
					assert.deepEqual(listed(await store.listBySubject!(subject)), [{ ...expected, idleExpiresAt: written }], "listBySubject reports the idle deadline from before a write");
				});

				it("matches a subject exactly: never as a prefix or a pattern, nor in another case, spacing or normal form", async () => {
					const base = `Match-\u00e9-${randomKey().slice(0, 8)}`;
					const subjects = [base, `${base}x`, `${base}_`, `${base}%`, `${base}*`, `${base}?`, `${base}[x]`, `${base}.`, `${base}\\`, base.toLowerCase(), base.toUpperCase(), `${base} `, base.normalize("NFD")];
					const keys = new Map(subjects.map((subject) => [subject, randomKey()]));
					for (const [subject, key] of keys) await store.set(key, makeRecord({ subject }), Date.now() + HOUR);
					for (const [subject, key] of keys) {
						assert.deepEqual((await store.listBySubject!(subject)).map((s) => s.key), [key], `listBySubject(${JSON.stringify(subject)}) lists other subjects' sessions`);
					}
					assert.equal(await store.deleteBySubject!(`${base}%`), 1, "deleteBySubject deleted sessions of other subjects");
					assert.equal(await store.deleteBySubject!(`${base}*`), 1, "deleteBySubject deleted sessions of other subjects");
					for (const [subject, key] of keys) {
						if (subject.endsWith("%") || subject.endsWith("*")) continue;
						assert.ok(await store.get(key), `deleteBySubject deleted the session of ${JSON.stringify(subject)}`);
						await store.delete(key);
					}
				});

				it("a second set, a write and a delete keep the subject listing in step", async () => {
					const first = `first-${randomKey().slice(0, 8)}`;
					const second = `second-${randomKey().slice(0, 8)}`;
					const key = randomKey();
					await store.set(key, makeRecord({ subject: first }), Date.now() + HOUR);
					await store.set(key, makeRecord({ subject: second }), Date.now() + HOUR);
					assert.deepEqual((await store.listBySubject!(first)).map((s) => s.key), [], "a second set with another subject left the session listed under the first");
					assert.deepEqual((await store.listBySubject!(second)).map((s) => s.key), [key]);
					await laterWrite(key, noChanges({ subject: first }), makeRecord({ subject: first }), Date.now() + HOUR);
					assert.deepEqual((await store.listBySubject!(second)).map((s) => s.key), [], "a write with another subject left the session listed under the old one");
					await store.delete(key);
					assert.deepEqual(await store.listBySubject!(first), [], "delete left the session listed");
					assert.equal(await store.deleteBySubject!(first), 0, "deleteBySubject counted a deleted session");
				});

				it("follows a subject change made by a later write", async () => {
					const before = `before-${randomKey().slice(0, 8)}`;
					const afterSubject = `after-${randomKey().slice(0, 8)}`;
					const key = randomKey();
					await store.set(key, makeRecord({ subject: before }), Date.now() + HOUR);
					await laterWrite(key, noChanges({ subject: afterSubject }), makeRecord({ subject: afterSubject }), Date.now() + HOUR);
					assert.deepEqual((await store.listBySubject!(before)).map((s) => s.key), []);
					assert.deepEqual((await store.listBySubject!(afterSubject)).map((s) => s.key), [key]);
				});

				it("through createSessions, destroyBySubject logs a user out everywhere", async () => {
					const sessions = createSessions({ store });
					const user = `user-${randomKey().slice(0, 8)}`;
					const cookies: string[] = [];
					for (let i = 0; i < 3; i++) {
						const s = await sessions.load(undefined);
						s.subject = user;
						s.set("device", i);
						cookies.push((await sessions.commit(s, { secure: false })).setCookie!.split(";")[0]!);
					}
					const listed = await sessions.listBySubject(user);
					assert.equal(listed.length, 3);
					for (const info of listed) assert.match(info.id, /^[0-9a-f]{64}$/);
					const destroyed: string[] = [];
					sessions.onDestroy((s) => {
						destroyed.push(s.id);
					});
					assert.equal(await sessions.destroyBySubject(user), 3);
					assert.equal(destroyed.length, 3);
					for (const cookie of cookies) assert.equal((await sessions.load(cookie)).isNew, true);
				});
			});
		}

		if (capabilities.count) {
			it("counts live sessions", async () => {
				const before = await store.count!();
				const keys = [randomKey(), randomKey()];
				for (const key of keys) await store.set(key, makeRecord(), Date.now() + HOUR);
				const grown = await store.count!();
				assert.ok(grown >= before + 2, "count grows with new sessions");
				for (const key of keys) await store.delete(key);
				const shrunk = await store.count!();
				assert.ok(shrunk <= grown - 2, `count() went from ${grown} to ${shrunk} after 2 sessions were deleted: it must go down`);
			});
		}

		if (!capabilities.selfExpiring) {
			it("gc() removes expired records", async () => {
				assert.equal(typeof store.gc, "function", "a store that does not expire by itself needs gc()");
				const expired = [randomKey(), randomKey()];
				const live = randomKey();
				for (const key of expired) await store.set(key, makeRecord(), Date.now() + 200);
				await store.set(live, makeRecord(), Date.now() + HOUR);
				await sleep(400);
				const removed = await store.gc!();
				assert.ok(removed >= 2, `gc removed ${removed}, expected at least 2`);
				assert.ok(await store.get(live), "gc keeps live records");
			});
		}
	});
}
