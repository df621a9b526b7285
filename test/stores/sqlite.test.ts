import assert from "node:assert/strict";
import { chmod, mkdtemp, rm, stat } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { Worker } from "node:worker_threads";
import Database from "better-sqlite3";
import { SessionConfigError, SessionStoreError } from "sessionkit";
import { sqliteSchema, sqliteStore } from "sessionkit/stores/sqlite";
import { randomKey, runId, sleep } from "../helpers/keys.js";
import { makeRecord, noChanges, storeConformance } from "sessionkit/testing";

const HOUR = 3_600_000;
const capabilities = { merge: true, subjects: true, count: true, selfExpiring: false, expiryResolutionMs: 1 };

async function tempDir(): Promise<{ dir: string; remove(): Promise<void> }> {
	const dir = await mkdtemp(join(tmpdir(), "sessionkit-sqlite-"));
	return { dir, remove: () => rm(dir, { recursive: true, force: true }) };
}

storeConformance(
	"sqlite (the app's database)",
	async () => {
		const temp = await tempDir();
		const db = new Database(join(temp.dir, "app.db"));
		db.pragma("journal_mode = WAL");
		const store = sqliteStore({ database: db, table: `sessions_${runId()}` });
		return {
			store,
			async cleanup() {
				await store.close();
				db.close();
				await temp.remove();
			},
		};
	},
	capabilities,
);

storeConformance(
	"sqlite (a path the store opens)",
	async () => {
		const temp = await tempDir();
		const store = sqliteStore({ path: join(temp.dir, "sessions.db") });
		return {
			store,
			async cleanup() {
				await store.close();
				await temp.remove();
			},
		};
	},
	capabilities,
);

describe("sqlite store", () => {
	let temp: { dir: string; remove(): Promise<void> };
	let db: Database.Database;

	before(async () => {
		temp = await tempDir();
		db = new Database(join(temp.dir, "app.db"));
		db.pragma("journal_mode = WAL");
	});
	after(async () => {
		db.close();
		await temp.remove();
	});

	function tableNames(): string[] {
		return db.prepare<[], string>("SELECT name FROM sqlite_master WHERE type = 'table'").pluck().all();
	}

	it("refuses a table name that is not a plain identifier, at construction", () => {
		const bad = ["", "1sessions", "sessions; DROP TABLE users", 'a"b', "a-b", "sé", "a b", "a".repeat(64), "main.sessions"];
		for (const table of bad) {
			assert.throws(
				() => sqliteStore({ database: db, table }),
				(error: unknown) => error instanceof SessionConfigError && error.option === "table",
				JSON.stringify(table),
			);
			assert.throws(() => sqliteSchema(table), SessionConfigError);
		}
		for (const table of ["_", "Sessions_2", "a".repeat(63)]) sqliteStore({ database: db, table, gcInterval: 0 });
	});

	it("refuses a bad database, path or gcInterval, at construction", () => {
		assert.throws(() => sqliteStore({} as never), SessionConfigError);
		assert.throws(() => sqliteStore({ database: db, path: "x.db" } as never), SessionConfigError);
		assert.throws(() => sqliteStore({ database: {} as never }), SessionConfigError);
		assert.throws(() => sqliteStore({ path: "" }), SessionConfigError);
		for (const gcInterval of [-1, Number.NaN, Number.POSITIVE_INFINITY, 30 * 86_400]) {
			assert.throws(() => sqliteStore({ database: db, gcInterval }), SessionConfigError, String(gcInterval));
		}
	});

	it("refuses a table name SQLite reserves (sqlite_…), at construction rather than at every call", () => {
		for (const table of ["sqlite_sessions", "SQLITE_x", "Sqlite_"]) {
			assert.throws(
				() => sqliteStore({ database: db, table, gcInterval: 0 }),
				(error: unknown) => error instanceof SessionConfigError && error.option === "table",
				table,
			);
			assert.throws(() => sqliteSchema(table), SessionConfigError);
		}
		sqliteStore({ database: db, table: "sqlitesessions", gcInterval: 0 });
	});

	it("refuses a path of only spaces, which better-sqlite3 would open as a temporary database", () => {
		for (const path of [" ", "  \t\n "]) {
			assert.throws(
				() => sqliteStore({ path, gcInterval: 0 }),
				(error: unknown) => error instanceof SessionConfigError && error.option === "path",
				JSON.stringify(path),
			);
		}
	});

	it("refuses no options at all as a missing database or path", () => {
		for (const options of [undefined, null]) {
			assert.throws(() => sqliteStore(options as never), (error: unknown) => error instanceof SessionConfigError && error.option === "database");
		}
	});

	it("refuses an option it does not know (a typo would otherwise do nothing), naming it and the known ones", () => {
		for (const options of [{ database: db, tabel: "other" }, { databse: db }, { path: join(temp.dir, "typo.db"), gcIntervall: 0 }]) {
			const typo = Object.keys(options).find((key) => !["database", "path"].includes(key))!;
			assert.throws(
				() => sqliteStore(options as never),
				(error: unknown) =>
					error instanceof SessionConfigError &&
					error.option === typo &&
					error.message === `sessionkit: option "${typo}" is not an option of sqliteStore. Known: database, path, table, gcInterval, clock.`,
				typo,
			);
		}
	});

	it("quotes a string where an option wants a number, so it cannot pass for one", () => {
		const cases: Array<[Record<string, unknown>, RegExp]> = [
			[{ database: db, gcInterval: "300" }, /option "gcInterval" must be .*, got "300"\.$/],
			[{ database: db, table: 5n }, /option "table" must be .*, got bigint\.$/],
			[{ path: 5n }, /option "path" must be a non-empty file path, got bigint\.$/],
		];
		for (const [options, message] of cases) assert.throws(() => sqliteStore(options as never), (error: unknown) => error instanceof SessionConfigError && message.test(error.message));
	});

	it("creates its table and indexes on first use, not at construction", async () => {
		const table = `lazy_${runId()}`;
		const store = sqliteStore({ database: db, table, gcInterval: 0 });
		assert.ok(!tableNames().includes(table), "no table before the first call");
		assert.equal(await store.get(randomKey()), null);
		assert.ok(tableNames().includes(table));
		const indexes = db.prepare<[string], string>("SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = ?").pluck().all(table);
		assert.ok(indexes.includes(`${table}_expires_at`));
		assert.ok(indexes.includes(`${table}_subject`));
		const plan = db.prepare(`EXPLAIN QUERY PLAN SELECT key FROM "${table}" WHERE subject = ? AND expires_at > ?`).all("u", 0);
		assert.match(JSON.stringify(plan), new RegExp(`${table}_subject`), "listBySubject uses the subject index");
		await store.close();
	});

	it("uses a table that already exists, with rows other stores wrote", async () => {
		const table = `existing_${runId()}`;
		db.exec(sqliteSchema(table));
		const key = randomKey();
		await sqliteStore({ database: db, table, gcInterval: 0 }).set(key, makeRecord({ subject: "s" }), Date.now() + HOUR);
		const other = sqliteStore({ database: db, table, gcInterval: 0 });
		assert.equal((await other.get(key))?.subject, "s");
	});

	it("refuses, at first use, a table name that differs only in case from an existing table (SQLite would make them one table)", async () => {
		const id = runId();
		const lower = sqliteStore({ database: db, table: `sessions_${id}`, gcInterval: 0 });
		const key = randomKey();
		await lower.set(key, makeRecord({ subject: "lower" }), Date.now() + HOUR);
		const upper = sqliteStore({ database: db, table: `Sessions_${id}`, gcInterval: 0 });
		await assert.rejects(
			upper.get(key),
			(error: unknown) => error instanceof SessionConfigError && error.option === "table" && error.message.includes(`"sessions_${id}"`),
		);
		await assert.rejects(upper.set(randomKey(), makeRecord(), Date.now() + HOUR), SessionConfigError);
		assert.equal(await lower.count(), 1, "nothing was written through the other name");
		await upper.close();
		await lower.close();
	});

	it("refuses a name that differs only in case from an app's own table before touching it: the case message, no index added", async () => {
		const id = runId();
		db.exec(`CREATE TABLE "Orders_${id}" (id INTEGER PRIMARY KEY, total REAL)`);
		const store = sqliteStore({ database: db, table: `orders_${id}`, gcInterval: 0 });
		await assert.rejects(store.get(randomKey()), (error: unknown) => error instanceof SessionConfigError && error.option === "table" && error.message.includes(`"Orders_${id}"`));
		const indexes = db.prepare("SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = ?").all(`Orders_${id}`);
		assert.deepEqual(indexes, [], "the app's table got no index of the store");
		await store.close();
	});

	it("uses a table the app created without quotes, under the name it was created with", async () => {
		const table = `Created_${runId()}`;
		db.exec(sqliteSchema(table).replaceAll(`"${table}"`, table));
		const store = sqliteStore({ database: db, table, gcInterval: 0 });
		await store.set(randomKey(), makeRecord(), Date.now() + HOUR);
		assert.equal(await store.count(), 1);
		await store.close();
	});

	it("opens a path in WAL mode and closes only the database it opened", async () => {
		const path = join(temp.dir, `own-${runId()}.db`);
		const own = sqliteStore({ path, gcInterval: 0 });
		await own.set(randomKey(), makeRecord(), Date.now() + HOUR);
		const probe = new Database(path, { readonly: true });
		assert.equal(probe.pragma("journal_mode", { simple: true }), "wal");
		probe.close();
		await own.close();
		await assert.rejects(own.get(randomKey()), SessionStoreError);

		const borrowed = sqliteStore({ database: db, table: `borrowed_${runId()}`, gcInterval: 0 });
		await borrowed.get(randomKey());
		await borrowed.close();
		assert.equal(db.open, true, "the app's database is still open");
	});

	it("creates a missing database file readable by its owner only, with its -wal and -shm files, and leaves an existing file's mode alone", async () => {
		const path = join(temp.dir, `private-${runId()}.db`);
		const own = sqliteStore({ path, gcInterval: 0 });
		await own.set(randomKey(), makeRecord(), Date.now() + HOUR);
		for (const file of [path, `${path}-wal`, `${path}-shm`]) {
			assert.equal((await stat(file)).mode & 0o077, 0, `${file} is mode ${((await stat(file)).mode & 0o777).toString(8)}`);
		}
		await own.close();

		const shared = join(temp.dir, `shared-${runId()}.db`);
		new Database(shared).close();
		await chmod(shared, 0o640);
		const other = sqliteStore({ path: shared, gcInterval: 0 });
		await other.get(randomKey());
		assert.equal((await stat(shared)).mode & 0o777, 0o640);
		await other.close();
	});

	it("returns numbers even when the app turned on safe integers", async () => {
		const path = join(temp.dir, `safe-${runId()}.db`);
		const safe = new Database(path).defaultSafeIntegers(true);
		const store = sqliteStore({ database: safe, gcInterval: 0 });
		const key = randomKey();
		const record = makeRecord({ subject: "n" });
		await store.set(key, record, record.idleExpiresAt);
		assert.deepEqual(await store.get(key), record);
		assert.equal(typeof (await store.count()), "number");
		assert.equal(typeof (await store.listBySubject("n"))[0]?.createdAt, "number");
		safe.close();
	});

	it("wraps a driver failure in SessionStoreError with the driver's error as cause", async () => {
		const path = join(temp.dir, `closed-${runId()}.db`);
		const closing = new Database(path);
		const store = sqliteStore({ database: closing, gcInterval: 0 });
		await store.get(randomKey());
		closing.close();
		await assert.rejects(store.set(randomKey(), makeRecord(), Date.now() + HOUR), (error: unknown) => {
			assert.ok(error instanceof SessionStoreError);
			assert.equal(error.store, "sqlite");
			assert.ok(error.cause instanceof Error);
			return true;
		});
	});

	it("keeps expired rows out of reads until gc() deletes them", async () => {
		const table = `gc_${runId()}`;
		const store = sqliteStore({ database: db, table, gcInterval: 0 });
		const key = randomKey();
		await store.set(key, makeRecord(), Date.now() - 1);
		assert.equal(await store.get(key), null);
		assert.equal(await store.replace(key, makeRecord(), Date.now() + HOUR), false, "replace does not revive an expired row");
		await store.touch(key, Date.now() + HOUR, Date.now() + HOUR);
		assert.equal(await store.get(key), null, "touch does not revive an expired row");
		const rows = db.prepare<[], number>(`SELECT count(*) FROM "${table}"`).pluck();
		assert.equal(rows.get(), 1, "the row is still there");
		assert.equal(await store.gc(), 1);
		assert.equal(rows.get(), 0);
	});

	it("starts its gc timer unref'd, so it never keeps the process alive", async () => {
		const timers = () => process.getActiveResourcesInfo().filter((name) => name === "Timeout").length;
		const before = timers();
		const store = sqliteStore({ database: db, table: `unref_${runId()}` });
		assert.equal(timers(), before);
		await store.close();
	});

	it("runs gc on its timer every gcInterval seconds", async () => {
		const table = `timer_${runId()}`;
		const store = sqliteStore({ database: db, table, gcInterval: 0.05 });
		await store.set(randomKey(), makeRecord(), Date.now() + 20);
		await store.set(randomKey(), makeRecord(), Date.now() + HOUR);
		const rows = db.prepare<[], number>(`SELECT count(*) FROM "${table}"`).pluck();
		await sleep(300);
		assert.equal(rows.get(), 1, "the timer deleted the expired row and kept the live one");
		await store.close();
	});

	it("merges atomically across connections in other threads", async () => {
		const path = join(temp.dir, `threads-${runId()}.db`);
		const store = sqliteStore({ path, gcInterval: 0 });
		const key = randomKey();
		await store.set(key, makeRecord({ data: {} }), Date.now() + HOUR);
		const perThread = 500;
		// Each worker has its own connection; all start together once loaded, so their
		// read-modify-write transactions really overlap ours in time.
		const source = `
			const { workerData, parentPort } = require("node:worker_threads");
			(async () => {
				(await import(workerData.tsx)).register();
				const { sqliteStore } = await import(workerData.store);
				const store = sqliteStore({ path: workerData.path, gcInterval: 0 });
				await store.get(workerData.key);
				parentPort.postMessage("ready");
				await new Promise((resolve) => parentPort.once("message", resolve));
				for (let i = 0; i < workerData.count; i++) {
					await store.merge(workerData.key, workerData.changes, Date.now() + 3_600_000);
				}
				await store.close();
				parentPort.postMessage("done");
			})();
		`;
		const workerData = {
			tsx: import.meta.resolve("tsx/esm/api"),
			store: new URL("../../src/stores/sqlite.ts", import.meta.url).href,
			path,
			key,
			count: perThread,
			changes: noChanges({ increment: { hits: 1 } }),
		};
		const workers = [1, 2].map(() => new Worker(source, { eval: true, workerData }));
		const message = (worker: Worker) =>
			new Promise<void>((resolve, reject) => {
				worker.once("message", () => resolve());
				worker.once("error", reject);
			});
		await Promise.all(workers.map(message));
		const done = workers.map(message);
		for (const worker of workers) worker.postMessage("go");
		for (let i = 0; i < perThread; i++) await store.merge(key, noChanges({ increment: { hits: 1 } }), Date.now() + HOUR);
		await Promise.all(done);
		assert.equal((await store.get(key))?.data.hits, String(3 * perThread));
		await store.close();
	});
});
