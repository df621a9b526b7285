import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { createServer, type Socket } from "node:net";
import { after, before, describe, it, type TestContext } from "node:test";
import mysql from "mysql2/promise";
import type { Pool, PoolConnection, PoolOptions, RowDataPacket } from "mysql2/promise";
import { applyChanges, SessionConfigError, SessionStoreError } from "sessionkit";
import { type MySQLStore, type MySQLStoreOptions, mysqlSchema, mysqlStore } from "sessionkit/stores/mysql";
import { assertCloseWaitsForGc } from "../helpers/gc-close.js";
import { randomKey, runId, sleep } from "../helpers/keys.js";
import { requireService, serviceURL } from "../services.js";
import { makeRecord, noChanges, storeConformance } from "sessionkit/testing";

const skip = await requireService("mysql");
const HOUR = 3_600_000;

function newPool(options: PoolOptions = {}): Pool {
	return mysql.createPool({ uri: serviceURL.mysql, ...options });
}

/** A pool whose connections run with NO_BACKSLASH_ESCAPES and ANSI_QUOTES added to their sql_mode. */
function noBackslashEscapesPool(connectionLimit: number): Pool {
	const pool = newPool({ connectionLimit });
	pool.pool.on("connection", (connection) => {
		connection.query("SET SESSION sql_mode = CONCAT(@@sql_mode, ',NO_BACKSLASH_ESCAPES,ANSI_QUOTES')", () => undefined);
	});
	return pool;
}

storeConformance(
	"mysql",
	async () => {
		const pool = newPool();
		const table = `sessions_test_${runId()}`;
		const store = mysqlStore({ pool }, { table, gcInterval: 0 });
		return {
			store,
			async cleanup() {
				await store.close();
				await pool.query(`DROP TABLE IF EXISTS \`${table}\``);
				await pool.end();
			},
		};
	},
	{ merge: true, subjects: true, count: true, selfExpiring: false, expiryResolutionMs: 1 },
	{ skip },
);

function assertStoreError(error: unknown): true {
	assert.ok(error instanceof SessionStoreError, `expected a SessionStoreError, got ${String(error)}`);
	assert.equal(error.store, "mysql");
	assert.match(error.message, /^sessionkit\/mysql: /);
	return true;
}

describe("mysql store", { skip }, () => {
	let admin: Pool;
	const tables: string[] = [];

	function newTable(): string {
		const table = `sessions_test_${runId()}`;
		tables.push(table);
		return table;
	}

	async function exists(table: string): Promise<boolean> {
		const [rows] = await admin.query<RowDataPacket[]>("SELECT 1 FROM information_schema.tables WHERE table_schema = DATABASE() AND table_name = ?", [table]);
		return rows.length === 1;
	}

	async function rowCount(table: string): Promise<number> {
		const [rows] = await admin.query<RowDataPacket[]>(`SELECT COUNT(*) AS n FROM \`${table}\``);
		return Number(rows[0]!.n);
	}

	before(() => {
		admin = newPool();
	});
	after(async () => {
		for (const table of tables) await admin.query(`DROP TABLE IF EXISTS \`${table}\``);
		await admin.end();
	});

	it("refuses a table name that is not a plain, optionally database-qualified identifier", async () => {
		for (const table of ["sessions; DROP TABLE users", "sessions`", "a.b.c", "", "1sessions", "ses-sions", ".sessions", "x".repeat(49)]) {
			assert.throws(() => mysqlStore({ pool: admin }, { table }), SessionConfigError, table);
			assert.throws(() => mysqlSchema(table), SessionConfigError, table);
		}
		assert.equal(mysqlStore({ pool: admin }, { table: "app_1.Sessions_2", gcInterval: 0 }).table, "app_1.Sessions_2");
	});

	it("refuses bad options and connections at construction", async () => {
		assert.throws(() => mysqlStore({ pool: admin }, { timeout: 0 }), SessionConfigError);
		assert.throws(() => mysqlStore({ pool: admin }, { timeout: Number.NaN }), SessionConfigError);
		assert.throws(() => mysqlStore({ pool: admin }, { gcInterval: -1 }), SessionConfigError);
		assert.throws(() => mysqlStore({ pool: admin }, { createTable: "yes" as unknown as boolean }), SessionConfigError);
		assert.throws(() => mysqlStore({} as never), SessionConfigError);
		assert.throws(() => mysqlStore({ pool: admin, url: serviceURL.mysql } as never), SessionConfigError);
		assert.throws(() => mysqlStore({ url: "" }), SessionConfigError);
		assert.throws(() => mysqlStore({ pool: {} as Pool }), SessionConfigError);
		const callbackPool = (await import("mysql2")).createPool({ uri: serviceURL.mysql });
		assert.throws(() => mysqlStore({ pool: callbackPool as unknown as Pool }), /pool\.promise\(\)/);
		await new Promise((resolve) => callbackPool.end(resolve));
	});

	it("quotes a string where an option wants a number or a boolean, so it cannot pass for one", () => {
		const cases: Array<[MySQLStoreOptions, RegExp]> = [
			[{ timeout: "5" as never }, /option "timeout" must be .*, got "5"\.$/],
			[{ gcInterval: "300" as never }, /option "gcInterval" must be .*, got "300"\.$/],
			[{ createTable: "false" as never }, /option "createTable" must be true or false, got "false"\.$/],
			[{ table: 5n as never }, /option "table" must be .*, got bigint\.$/],
		];
		for (const [options, message] of cases) assert.throws(() => mysqlStore({ pool: admin }, options), (error: unknown) => error instanceof SessionConfigError && message.test(error.message));
	});

	it("creates the table and its indexes on first use, once, even when several stores start together", async () => {
		const table = newTable();
		const pool = newPool({ connectionLimit: 10 });
		const stores = Array.from({ length: 5 }, () => mysqlStore({ pool }, { table, gcInterval: 0 }));
		assert.equal(await exists(table), false, "constructing a store does not touch the database");
		await Promise.all(stores.map((store) => store.get(randomKey())));
		assert.equal(await exists(table), true);
		const [indexes] = await admin.query<RowDataPacket[]>(`SHOW INDEX FROM \`${table}\``);
		assert.deepEqual([...new Set(indexes.map((row) => row.Key_name as string))].sort(), ["PRIMARY", `${table}_expires_at_idx`, `${table}_subject_idx`]);
		await pool.end();
	});

	it("with createTable off, a missing table fails with a SessionStoreError that says what to run", async () => {
		const store = mysqlStore({ pool: admin }, { table: newTable(), createTable: false, gcInterval: 0 });
		await assert.rejects(store.get(randomKey()), (error: unknown) => {
			assertStoreError(error);
			assert.match((error as Error).message, /does not exist.*mysqlSchema\(\)/);
			return true;
		});
	});

	it("mysqlSchema is the DDL the store needs: it runs twice, and a store with createTable off works on it", async () => {
		const table = newTable();
		assert.match(mysqlSchema(table), new RegExp(`CREATE TABLE IF NOT EXISTS \`${table}\``));
		await admin.query(mysqlSchema(table));
		await admin.query(mysqlSchema(table));
		const store = mysqlStore({ pool: admin }, { table, createTable: false, gcInterval: 0 });
		const key = randomKey();
		const record = makeRecord({ subject: "s" });
		await store.set(key, record, record.idleExpiresAt);
		assert.deepEqual(await store.get(key), record);
		await store.close();
	});

	it("works with a database-qualified table", async () => {
		const table = newTable();
		const store = mysqlStore({ pool: admin }, { table: `test.${table}`, gcInterval: 0 });
		const key = randomKey();
		await store.set(key, makeRecord(), Date.now() + HOUR);
		assert.ok(await store.get(key));
		assert.equal(await rowCount(table), 1);
		await store.close();
	});

	it("matches keys and subjects byte for byte, never by a case-insensitive or space-padding collation", async () => {
		const store = mysqlStore({ pool: admin }, { table: newTable(), gcInterval: 0 });
		const key = randomKey();
		await store.set(key, makeRecord({ subject: "alice" }), Date.now() + HOUR);
		assert.equal(await store.get(`${key} `), null);
		assert.equal(await store.get(key.toUpperCase()), null);
		assert.deepEqual(await store.listBySubject("ALICE"), []);
		assert.deepEqual(await store.listBySubject("alice "), []);
		assert.equal(await store.deleteBySubject("Alice"), 0);
		assert.equal((await store.listBySubject("alice")).length, 1);
		await store.close();
	});

	it("works on connections whose sql_mode has NO_BACKSLASH_ESCAPES (and ANSI_QUOTES): quotes and backslashes round-trip, and a value cannot end its literal", async () => {
		// mysql2 escapes values with backslashes whatever the sql_mode: under NO_BACKSLASH_ESCAPES
		// every write of a JSON object failed, and a ' in a value ended the literal (SQL injection).
		const pool = noBackslashEscapesPool(2);
		const table = newTable();
		const store = mysqlStore({ pool }, { table, gcInterval: 0 });
		try {
			const [[mode]] = await pool.query<RowDataPacket[]>("SELECT @@SESSION.sql_mode AS m");
			assert.match(String(mode!.m), /NO_BACKSLASH_ESCAPES/, "the pool's connections are as the test meant");
			const hostile = `it's "quoted" \\ back\\slash \\' \\\\'' \n\r\t\u001a 🍪 '); DELETE FROM \`${table}\`; -- `;
			const subject = `o'brien \\ ${hostile}`.slice(0, 200);
			const key = randomKey();
			const other = randomKey();
			const record = makeRecord({ subject, data: { [hostile]: JSON.stringify(hostile), n: "1" }, flash: { [`f'\\`]: JSON.stringify(hostile) } });
			await store.set(key, record, record.idleExpiresAt);
			await store.set(other, makeRecord({ subject: "someone else" }), Date.now() + HOUR);
			assert.deepEqual(await store.get(key), record);
			assert.equal(await rowCount(table), 2);

			const changes = noChanges({ set: { [`${hostile}2`]: JSON.stringify(hostile) }, increment: { n: 1 }, flashDelete: [`f'\\`], flashSet: { [hostile]: '"x"' } });
			assert.equal(await store.merge(key, changes, Date.now() + HOUR), true);
			assert.deepEqual(await store.get(key), { ...applyChanges(record, changes), idleExpiresAt: changes.idleExpiresAt });
			const replaced = makeRecord({ subject, data: { [hostile]: '"replaced"' } });
			assert.equal(await store.replace(key, replaced, replaced.idleExpiresAt), true);
			assert.deepEqual(await store.get(key), replaced);
			assert.deepEqual((await store.listBySubject(subject)).map((session) => session.key), [key]);
			assert.equal(await store.deleteBySubject(subject), 1);
			assert.equal(await store.get(key), null);
			assert.ok(await store.get(other), "another session is untouched");
		} finally {
			await store.close();
			await pool.end();
		}
	});

	it("stores a value of more than half max_allowed_packet (9 MB under MariaDB's 16 MB), quotes and backslashes included, in every sql_mode", async () => {
		// Every JSON text went as a hex literal, twice its size: a record that fitted before failed
		// with "Got a packet bigger than 'max_allowed_packet' bytes".
		const pool = noBackslashEscapesPool(1);
		const table = newTable();
		const store = mysqlStore({ pool }, { table, gcInterval: 0 });
		try {
			const [[packet]] = await pool.query<RowDataPacket[]>("SELECT @@max_allowed_packet AS n");
			const big = JSON.stringify(`"a" \\ 'b' ${"x".repeat(Math.min(Math.floor(Number(packet!.n) * 0.55), 200 * 1024 * 1024))}`);
			const key = randomKey();
			const record = makeRecord({ data: { big, "o'k": JSON.stringify("it's '' \\'") }, flash: { q: JSON.stringify('"\\') } });
			await store.set(key, record, record.idleExpiresAt);
			assert.deepEqual(await store.get(key), record);
			const changes = noChanges({ set: { more: JSON.stringify("y's \\") } });
			assert.equal(await store.merge(key, changes, Date.now() + HOUR), true);
			assert.deepEqual(await store.get(key), { ...applyChanges(record, changes), idleExpiresAt: changes.idleExpiresAt });
			const replaced = makeRecord({ data: { big } });
			assert.equal(await store.replace(key, replaced, replaced.idleExpiresAt), true);
			assert.deepEqual(await store.get(key), replaced);
		} finally {
			await store.close();
			await pool.end();
		}
	});

	it("gc() deletes expired rows and keeps live ones, and the gcInterval timer does it unprompted", async () => {
		const table = newTable();
		const store = mysqlStore({ pool: admin }, { table, gcInterval: 0.2 });
		const live = randomKey();
		await store.set(live, makeRecord(), Date.now() + HOUR);
		for (let i = 0; i < 3; i++) await store.set(randomKey(), makeRecord(), Date.now() - 1000);
		assert.equal(await rowCount(table), 4);
		await sleep(700);
		assert.equal(await rowCount(table), 1, "the timer deleted the expired rows");
		assert.ok(await store.get(live));
		await store.close();

		const manual = mysqlStore({ pool: admin }, { table, gcInterval: 0 });
		for (let i = 0; i < 1005; i++) await manual.set(randomKey(), makeRecord(), Date.now() - 1000);
		assert.equal(await manual.gc(), 1005, "gc goes on past one batch");
		assert.equal(await rowCount(table), 1);
		await manual.close();
	});

	it("close(), and a second close() called meanwhile, wait for a gc statement of the timer still in flight (on the app's pool), and nothing runs after it", async () => {
		const table = newTable();
		await assertCloseWaitsForGc({
			makeStore: (gcInterval) => mysqlStore({ pool: admin }, { table, gcInterval }),
			holder: await admin.getConnection(),
			lock: ["START TRANSACTION", `SELECT * FROM \`${table}\` FOR UPDATE`],
			expiredRows: () => rowCount(table),
		});
	});

	it("merge increments exactly as applyChanges does, non-numbers counting as 0", async () => {
		const store = mysqlStore({ pool: admin }, { table: newTable(), gcInterval: 0 });
		const key = randomKey();
		const record = makeRecord({ data: { text: '"abc"', fraction: "1.5", exp: "1e3", neg: "-7", bool: "true" } });
		await store.set(key, record, Date.now() + HOUR);
		const changes = noChanges({ set: { text: '"abc"' }, increment: { text: 2, fraction: 1, exp: 1, neg: -3, bool: 1, missing: 0.25 } });
		assert.equal(await store.merge(key, changes, Date.now() + HOUR), true);
		assert.deepEqual((await store.get(key))?.data, applyChanges(record, changes).data);
		await store.close();
	});

	/** Runs `script` (ESM, with sessionkit's source) in a child node; its exit code, or why it was killed after `limitMs`. */
	async function runScript(script: string, args: string[], limitMs = 15_000): Promise<{ code: number | string | null; output: string; ms: number }> {
		const child = spawn(process.execPath, ["--conditions=sessionkit-source", "--import", "tsx", "--input-type=module", "-e", script, ...args], {
			stdio: ["ignore", "pipe", "pipe"],
		});
		let output = "";
		child.stdout.on("data", (chunk: Buffer) => (output += chunk));
		child.stderr.on("data", (chunk: Buffer) => (output += chunk));
		const started = Date.now();
		const code = await new Promise<number | string | null>((resolve) => {
			const timer = setTimeout(() => {
				child.kill("SIGKILL");
				resolve(`still running after ${limitMs / 1000} s`);
			}, limitMs);
			child.once("exit", (exitCode, signal) => {
				clearTimeout(timer);
				resolve(exitCode ?? signal);
			});
		});
		return { code, output, ms: Date.now() - started };
	}

	it("with { url }, an idle pool does not keep the process alive: a script that never calls close() exits by itself", async () => {
		const table = newTable();
		// One set and get, then a burst that opens several connections, and a merge (a transaction);
		// no close(). Every connection is idle at the end, and none may hold the process; nor may
		// the gc timer (default gcInterval).
		const script = `
			const { mysqlStore } = await import("sessionkit/stores/mysql");
			const [url, table, key, json] = process.argv.slice(1);
			const record = JSON.parse(json);
			const store = mysqlStore({ url }, { table });
			await store.set(key, record, Date.now() + 3_600_000);
			if ((await store.get(key))?.subject !== record.subject) throw new Error("get did not read back the set");
			const burst = await Promise.all(Array.from({ length: 6 }, () => store.get(key)));
			if (burst.some((found) => found === null)) throw new Error("a parallel get found nothing");
			if ((await store.merge(key, { ...${JSON.stringify(noChanges())}, set: { n: "1" } }, Date.now() + 3_600_000)) !== true) throw new Error("merge failed");
			console.log("done");
		`;
		const record = makeRecord({ subject: "exit-on-idle" });
		const { code, output, ms } = await runScript(script, [serviceURL.mysql, table, randomKey(), JSON.stringify(record)]);
		assert.equal(code, 0, `the script ${typeof code === "string" ? code : `exited with ${code}`} (${ms} ms); output: ${output}`);
		assert.equal(output.trim(), "done", "it finished its work before exiting");
		assert.equal(await rowCount(table), 1);
	});

	it("with { url }, a call in flight still keeps the process alive: a merge waiting for a row lock finishes before the script exits", async () => {
		const table = newTable();
		const key = randomKey();
		const setup = mysqlStore({ pool: admin }, { table, gcInterval: 0 });
		await setup.set(key, makeRecord({ data: {} }), Date.now() + HOUR);
		const script = `
			const { mysqlStore } = await import("sessionkit/stores/mysql");
			const [url, table, key] = process.argv.slice(1);
			const store = mysqlStore({ url }, { table, timeout: 10 });
			await store.get(key); // a connection, idle (unref'd) before the merge takes it again
			console.log(await store.merge(key, { ...${JSON.stringify(noChanges())}, set: { late: "1" } }, Date.now() + 3_600_000));
		`;
		const locker = await admin.getConnection();
		let running: ReturnType<typeof runScript> | undefined;
		try {
			await locker.query("START TRANSACTION");
			await locker.query(`SELECT 1 FROM \`${table}\` WHERE \`key\` = ? FOR UPDATE`, [key]);
			running = runScript(script, [serviceURL.mysql, table, key]);
			// Until the child's merge waits for the lock: then only its socket and its deadline are pending.
			let waiting = 0;
			for (let waited = 0; waiting === 0 && waited < 10_000; waited += 50) {
				await sleep(50);
				const [rows] = await admin.query<RowDataPacket[]>(
					"SELECT COUNT(*) AS n FROM information_schema.processlist WHERE id <> CONNECTION_ID() AND info LIKE CONCAT('%', ?, '%FOR UPDATE')",
					[table],
				);
				waiting = Number(rows[0]!.n);
			}
			assert.equal(waiting, 1, "the child's merge waited for the lock");
			await sleep(500);
			await locker.query("COMMIT");
		} finally {
			locker.release();
		}
		const { code, output, ms } = await running;
		assert.equal(code, 0, `the script ${typeof code === "string" ? code : `exited with ${code}`} (${ms} ms); output: ${output}`);
		assert.equal(output.trim(), "true", "the merge finished, and was applied");
		assert.deepEqual((await setup.get(key))?.data, { late: "1" });
	});

	describe("faults", () => {
		it("a store pointed at a closed port rejects with a SessionStoreError naming the store, within the timeout", async () => {
			const store = mysqlStore({ url: "mysql://root@127.0.0.1:1/test" }, { timeout: 1, gcInterval: 0 });
			const started = Date.now();
			await assert.rejects(store.get(randomKey()), assertStoreError);
			assert.ok(Date.now() - started < 1500, `took ${Date.now() - started} ms`);
			await store.close();
		});

		it("a server that accepts connections but never answers makes the call time out", async () => {
			const sockets = new Set<Socket>();
			const silent = createServer((socket) => sockets.add(socket));
			await new Promise<void>((resolve) => silent.listen(0, "127.0.0.1", resolve));
			const { port } = silent.address() as { port: number };
			const store = mysqlStore({ url: `mysql://root@127.0.0.1:${port}/test` }, { timeout: 0.5, gcInterval: 0 });
			const started = Date.now();
			await assert.rejects(store.get(randomKey()), assertStoreError);
			const elapsed = Date.now() - started;
			assert.ok(elapsed >= 450 && elapsed < 1500, `took ${elapsed} ms`);
			await store.close();
			for (const socket of sockets) socket.destroy();
			await new Promise((resolve) => silent.close(resolve));
		});

		it("a merge blocked by another transaction's row lock times out, is not applied late, and the store carries on", async () => {
			const table = newTable();
			const store = mysqlStore({ url: serviceURL.mysql }, { table, timeout: 1, gcInterval: 0 });
			const key = randomKey();
			await store.set(key, makeRecord({ data: {} }), Date.now() + HOUR);

			const locker = await admin.getConnection();
			try {
				await locker.query("START TRANSACTION");
				await locker.query(`SELECT 1 FROM \`${table}\` WHERE \`key\` = ? FOR UPDATE`, [key]);
				const started = Date.now();
				await assert.rejects(store.merge(key, noChanges({ set: { late: "1" } }), Date.now() + HOUR), assertStoreError);
				assert.ok(Date.now() - started < 1500, `took ${Date.now() - started} ms`);
				// InnoDB checks lock waits about once a second: wait past the server's own timeout.
				await sleep(1500);
				await locker.query("COMMIT");
			} finally {
				locker.release();
			}
			await sleep(200);
			assert.deepEqual((await store.get(key))?.data, {}, "the timed-out merge was rolled back");
			assert.equal(await store.merge(key, noChanges({ set: { now: "1" } }), Date.now() + HOUR), true);
			assert.deepEqual((await store.get(key))?.data, { now: "1" });
			await store.close();
		});

		it("a call that timed out waiting for a connection does not send its statement when one frees up", async () => {
			const pool = newPool({ connectionLimit: 1 });
			const store = mysqlStore({ pool }, { table: newTable(), timeout: 0.5, gcInterval: 0 });
			const key = randomKey();
			const record = makeRecord();
			await store.set(key, record, record.idleExpiresAt);
			// The app holds the pool's one connection past the store's timeout.
			const held = await pool.getConnection();
			try {
				await assert.rejects(store.touch(key, record.idleExpiresAt + HOUR, record.idleExpiresAt + HOUR), assertStoreError);
			} finally {
				held.release();
			}
			await sleep(200);
			assert.equal((await store.get(key))?.idleExpiresAt, record.idleExpiresAt, "the touch that timed out was never sent");
			await store.close();
			await pool.end();
		});

		it("a statement that timed out does not hold up later calls: its connection is closed, never put back while the statement runs", async () => {
			const pool = newPool({ connectionLimit: 2 });
			const table = newTable();
			const store = mysqlStore({ pool }, { table, timeout: 1, gcInterval: 0 });
			const [locked, free] = [randomKey(), randomKey()];
			await store.set(locked, makeRecord(), Date.now() + HOUR);
			await store.set(free, makeRecord(), Date.now() + HOUR);
			const locker = await admin.getConnection();
			try {
				await locker.query("START TRANSACTION");
				await locker.query(`SELECT 1 FROM \`${table}\` WHERE \`key\` = ? FOR UPDATE`, [locked]);
				// One touch per pool connection, each waiting for the row lock (50 s on this pool) past its timeout.
				const touches = await Promise.allSettled([0, 1].map(() => store.touch(locked, Date.now() + 2 * HOUR, Date.now() + 2 * HOUR)));
				assert.deepEqual(touches.map((outcome) => outcome.status), ["rejected", "rejected"]);
				await sleep(100);
				// The lock is still held, and both statements still wait for it on the server.
				for (let i = 0; i < 3; i++) {
					const started = Date.now();
					assert.ok(await store.get(free), "a row no one locked is read");
					assert.ok(Date.now() - started < 500, `get waited ${Date.now() - started} ms behind a statement that had timed out`);
				}
			} finally {
				await locker.query("ROLLBACK");
				locker.release();
			}
			await store.close();
			await pool.end();
		});

		it("recovers by itself after the server kills every one of its connections", async () => {
			const pool = newPool({ connectionLimit: 4 });
			const threads = new Set<number>();
			let ended = 0;
			pool.pool.on("connection", (connection) => {
				threads.add(connection.threadId);
				connection.once("end", () => ended++);
			});
			const store = mysqlStore({ pool }, { table: newTable(), gcInterval: 0 });
			const key = randomKey();
			await store.set(key, makeRecord(), Date.now() + HOUR);
			await Promise.all(Array.from({ length: 4 }, () => store.merge(key, noChanges(), Date.now() + HOUR)));
			assert.ok(threads.size >= 1, "the store had connections to kill");
			// The store opens new connections after the kill: snapshot the ones being killed.
			const killed = [...threads];
			for (const id of killed) await admin.query(`KILL ${Number(id)}`);
			// The pool drops each connection as the server's close arrives; no one tells the store.
			for (let waited = 0; ended < killed.length && waited < 2000; waited += 20) await sleep(20);
			assert.equal(ended, killed.length);
			assert.ok(await store.get(key), "the next call works on a new connection");
			assert.equal(await store.merge(key, noChanges({ set: { after: "1" } }), Date.now() + HOUR), true);
			// KILL is asynchronous: a killed thread stays listed until the server has torn it down.
			let alive: RowDataPacket[] = [];
			for (let waited = 0; waited <= 5000; waited += 50) {
				[alive] = await admin.query<RowDataPacket[]>("SELECT id FROM information_schema.processlist WHERE id IN (?)", [killed]);
				if (alive.length === 0) break;
				await sleep(50);
			}
			assert.deepEqual(alive, [], "every old connection is gone");
			await store.close();
			await pool.end();
		});
	});

	// Two store calls deadlock when they lock the same row and subject index entry in opposite
	// orders: merge locks the row (SELECT … FOR UPDATE), then, changing the subject, needs the
	// row's entry in the subject index; deleteBySubject locks the subject's index entries, then
	// each row. InnoDB rolls one back with error 1213 (ER_LOCK_DEADLOCK). The first test checks
	// what a retry relies on; in the next three the test's own transaction plays one side,
	// statement by statement, so the deadlock happens every time; the last one runs the store's
	// calls against each other.
	describe("deadlocks", () => {
		/**
		 * A store on a pool of its own, closed after the test whether it passed or not, and sessions
		 * of other subjects in its table, so that the optimizer reads the subject index as on a real one.
		 */
		async function storeForDeadlocks(t: TestContext, options: MySQLStoreOptions = {}): Promise<{ store: MySQLStore; table: string }> {
			const pool = newPool({ connectionLimit: 10 });
			const table = newTable();
			const store = mysqlStore({ pool }, { table, gcInterval: 0, ...options });
			t.after(async () => {
				await store.close();
				await pool.end();
			});
			await Promise.all(Array.from({ length: 50 }, (_, i) => store.set(randomKey(), makeRecord({ subject: `other-${i}` }), Date.now() + HOUR)));
			return { store, table };
		}

		/**
		 * A connection in a transaction that has already written rows elsewhere: InnoDB rolls back
		 * the deadlocked transaction that has done the least, which makes it the store's call.
		 * Closed after the test, which rolls back whatever it still holds.
		 */
		async function heavyTransaction(t: TestContext, table: string): Promise<PoolConnection> {
			const ballast = `${table}_ballast`;
			tables.push(ballast);
			await admin.query(`CREATE TABLE \`${ballast}\` (id INT PRIMARY KEY) ENGINE=InnoDB`);
			const connection = await admin.getConnection();
			t.after(() => connection.destroy());
			await connection.query("START TRANSACTION");
			await connection.query(`INSERT INTO \`${ballast}\` (id) VALUES ${Array.from({ length: 20 }, (_, i) => `(${i})`).join(", ")}`);
			return connection;
		}

		/**
		 * Resolves once a statement of the store (`verb` on `table`) waits for a row lock. The server
		 * refreshes innodb_trx only when no one has read it for 100 ms: a faster poll never sees the wait.
		 */
		async function untilWaitingForLock(table: string, verb: "UPDATE" | "DELETE"): Promise<void> {
			for (let waited = 0; waited < 5000; waited += 150) {
				await sleep(150);
				const [rows] = await admin.query<RowDataPacket[]>(
					"SELECT COUNT(*) AS n FROM information_schema.innodb_trx WHERE trx_state = 'LOCK WAIT' AND trx_query LIKE CONCAT(?, ' `', ?, '`%')",
					[verb === "DELETE" ? "DELETE FROM" : verb, table],
				);
				if (Number(rows[0]!.n) > 0) return;
			}
			assert.fail(`no ${verb} on ${table} waited for a lock`);
		}

		/** Deadlocks InnoDB has detected since the server started (every client's). */
		async function deadlockCount(): Promise<number> {
			const [rows] = await admin.query<RowDataPacket[]>("SHOW GLOBAL STATUS LIKE 'Innodb_deadlocks'");
			return Number(rows[0]!.Value);
		}

		it("InnoDB rolls back a deadlock's victim whole, earlier writes and locks included: what lets the store run it again from its start", async (t) => {
			const { store, table } = await storeForDeadlocks(t);
			const [first, second] = [randomKey(), randomKey()];
			for (const key of [first, second]) await store.set(key, makeRecord({ data: {} }), Date.now() + HOUR);
			const winner = await heavyTransaction(t, table);
			await winner.query("SET SESSION innodb_lock_wait_timeout = 5");
			const victim = await admin.getConnection();
			t.after(() => victim.destroy());
			await victim.query("START TRANSACTION");
			await victim.query(`UPDATE \`${table}\` SET \`data\` = '{"written":"1"}' WHERE \`key\` = ?`, [first]);
			await winner.query(`SELECT 1 FROM \`${table}\` WHERE \`key\` = ? FOR UPDATE`, [second]);
			// Each holds one row and asks for the other's: whichever asks second closes the cycle.
			const victimAsks = victim.query(`SELECT 1 FROM \`${table}\` WHERE \`key\` = ? FOR UPDATE`, [second]);
			victimAsks.catch(() => undefined);
			// Granted only once the victim's lock on `first`, taken by an earlier statement, is gone.
			await winner.query(`SELECT 1 FROM \`${table}\` WHERE \`key\` = ? FOR UPDATE`, [first]);
			await assert.rejects(victimAsks, { errno: 1213 });
			await winner.query("ROLLBACK");
			assert.deepEqual((await store.get(first))?.data, {}, "the victim's earlier UPDATE was rolled back");
		});

		it("a deleteBySubject that InnoDB rolls back as a deadlock's victim runs again, and deletes the sessions still of the subject", async (t) => {
			const { store, table } = await storeForDeadlocks(t);
			const [moving, staying] = [randomKey(), randomKey()];
			for (const key of [moving, staying]) await store.set(key, makeRecord({ subject: "alice", data: {} }), Date.now() + HOUR);
			const deadlocksBefore = await deadlockCount();

			// The statements of a merge that moves one of alice's sessions to bob.
			const merger = await heavyTransaction(t, table);
			await merger.query(`SELECT 1 FROM \`${table}\` WHERE \`key\` = ? FOR UPDATE`, [moving]);
			const deleting = store.deleteBySubject("alice");
			deleting.catch(() => undefined); // awaited below; it may settle first
			// deleteBySubject holds alice's index entries and waits for the moving row...
			await untilWaitingForLock(table, "DELETE");
			// ...and changing the row's subject needs one of those entries: a deadlock.
			await merger.query(`UPDATE \`${table}\` SET \`subject\` = 'bob' WHERE \`key\` = ?`, [moving]);
			await merger.query("COMMIT");

			assert.equal(await deleting, 1, "only the session still of alice was deleted");
			assert.ok((await deadlockCount()) > deadlocksBefore, "InnoDB detected a deadlock");
			assert.equal(await store.get(staying), null);
			assert.equal((await store.get(moving))?.subject, "bob");
		});

		/** Starts a merge that moves `key` from alice to bob and adds 1 to `n`, and deadlocks it with a transaction that locks as deleteBySubject("alice") does. */
		async function deadlockedMerge(t: TestContext, store: MySQLStore, table: string, key: string) {
			const deleter = await heavyTransaction(t, table);
			// deleteBySubject's order: the subject's index entries first, then each row.
			await deleter.query(`SELECT \`key\` FROM \`${table}\` FORCE INDEX (\`${table}_subject_idx\`) WHERE \`subject\` = 'alice' LOCK IN SHARE MODE`);
			const started = Date.now();
			const merging = store.merge(key, noChanges({ subject: "bob", increment: { n: 1 } }), Date.now() + HOUR);
			merging.catch(() => undefined); // awaited by the caller; it may settle first
			// The merge has locked the row and updated it, and waits to move its index entry...
			await untilWaitingForLock(table, "UPDATE");
			// ...which the deleter holds, and the deleter now wants the row: a deadlock.
			await deleter.query(`SELECT 1 FROM \`${table}\` WHERE \`key\` = ? FOR UPDATE`, [key]);
			return { merging, deleter, started };
		}

		it("a merge that InnoDB rolls back as a deadlock's victim runs again from its start, and adds its increment once", async (t) => {
			const { store, table } = await storeForDeadlocks(t);
			const key = randomKey();
			await store.set(key, makeRecord({ subject: "alice", data: { n: "1" } }), Date.now() + HOUR);
			const deadlocksBefore = await deadlockCount();

			const { merging, deleter } = await deadlockedMerge(t, store, table, key);
			await deleter.query("ROLLBACK");

			assert.equal(await merging, true);
			assert.ok((await deadlockCount()) > deadlocksBefore, "InnoDB detected a deadlock");
			const merged = await store.get(key);
			assert.deepEqual([merged?.subject, merged?.data], ["bob", { n: "2" }], "the increment was added once: InnoDB had rolled back the victim's UPDATE");
		});

		it("a merge that is a deadlock's victim is not retried past its timeout, nor committed late", async (t) => {
			const { store, table } = await storeForDeadlocks(t, { timeout: 1 });
			const key = randomKey();
			await store.set(key, makeRecord({ subject: "alice", data: { n: "1" } }), Date.now() + HOUR);

			const { merging, deleter, started } = await deadlockedMerge(t, store, table, key);
			// The deleter keeps the row past the merge's timeout: the retry waits for it, then gives up.
			await assert.rejects(merging, (error: unknown) => assertStoreError(error) && /merge timed out after 1 s/.test((error as Error).message));
			assert.ok(Date.now() - started < 1500, `took ${Date.now() - started} ms`);
			await deleter.query("ROLLBACK");
			await sleep(200);
			assert.deepEqual((await store.get(key))?.data, { n: "1" }, "the retry that got the row after the timeout did not commit");
		});

		it("parallel merges that move sessions to another subject, and deleteBySubject of the old one, all succeed: each session is moved once or deleted", async (t) => {
			const { store } = await storeForDeadlocks(t);
			const deadlocksBefore = await deadlockCount();
			const failures: string[] = [];
			for (let round = 0; round < 30; round++) {
				const subject = `user-${round}`;
				const keys = Array.from({ length: 6 }, () => randomKey());
				await Promise.all(keys.map((key) => store.set(key, makeRecord({ subject, data: {} }), Date.now() + HOUR)));
				const merges = keys.map((key) => store.merge(key, noChanges({ subject: `${subject}-moved`, increment: { n: 1 } }), Date.now() + HOUR));
				const outcomes = await Promise.allSettled([...merges, store.deleteBySubject(subject)]);
				const rejected = outcomes.filter((outcome) => outcome.status === "rejected");
				failures.push(...rejected.map((outcome) => String(outcome.reason)));
				if (rejected.length > 0) continue;
				const merged = outcomes.slice(0, -1).map((outcome) => (outcome as PromiseFulfilledResult<boolean>).value);
				const deleted = (outcomes.at(-1) as PromiseFulfilledResult<number>).value;
				assert.equal(deleted, merged.filter((found) => !found).length, "deleteBySubject deleted exactly the sessions no merge had moved");
				for (const [i, key] of keys.entries()) {
					const row = await store.get(key);
					assert.deepEqual(row && [row.subject, row.data], merged[i] ? [`${subject}-moved`, { n: "1" }] : null);
				}
			}
			t.diagnostic(`InnoDB detected ${(await deadlockCount()) - deadlocksBefore} deadlocks (every client's) during the test`);
			assert.deepEqual(failures, [], `${failures.length} calls failed`);
		});
	});
});

it("mysqlStore refuses an option it does not know, and one given in the connection, saying where it belongs", () => {
	const unknown = (error: unknown, option: string, message: string) => error instanceof SessionConfigError && error.option === option && error.message === `sessionkit: option "${option}" ${message}`;
	assert.throws(() => mysqlStore({ url: "mysql://root@127.0.0.1:1/test" }, { tabel: "s" } as never), (error) => unknown(error, "tabel", "is not an option of mysqlStore. Known: table, createTable, gcInterval, timeout."));
	assert.throws(() => mysqlStore({ url: "mysql://root@127.0.0.1:1/test", table: "s" } as never), (error) => unknown(error, "table", "belongs in mysqlStore's second argument, the options: mysqlStore(connection, { table }), not in the connection."));
	assert.throws(() => mysqlStore({ url: "mysql://root@127.0.0.1:1/test", poool: 1 } as never), (error) => unknown(error, "poool", "is not an option of mysqlStore's connection (its first argument). Known: pool, url."));
});
