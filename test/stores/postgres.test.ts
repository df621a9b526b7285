import assert from "node:assert/strict";
import { connect, createServer, type Socket } from "node:net";
import { after, before, describe, it } from "node:test";
import pg from "pg";
import { applyChanges, type RecordChanges, SessionConfigError, SessionStoreError } from "sessionkit";
import { type PostgresStoreOptions, postgresSchema, postgresStore } from "sessionkit/stores/postgres";
import { assertCloseWaitsForGc } from "../helpers/gc-close.js";
import { randomKey, runId, sleep } from "../helpers/keys.js";
import { requireService, serviceURL } from "../services.js";
import { makeRecord, noChanges, storeConformance } from "sessionkit/testing";

const skip = await requireService("postgres");
const skipBouncer = skip ?? (await requireService("pgbouncer"));
const HOUR = 3_600_000;

function newPool(config: pg.PoolConfig = {}): pg.Pool {
	const pool = new pg.Pool({ connectionString: serviceURL.postgres, ...config });
	// pg requires a listener: the fault tests terminate connections on purpose.
	pool.on("error", () => undefined);
	return pool;
}

// Also with plain (unnamed) statements, as behind PgBouncer in transaction mode.
for (const prepare of [true, false]) {
	storeConformance(
		prepare ? "postgres" : "postgres (prepare: false)",
		async () => {
			const pool = newPool();
			const table = `sessions_test_${runId()}`;
			const store = postgresStore({ pool }, { table, gcInterval: 0, prepare });
			return {
				store,
				async cleanup() {
					await store.close();
					await pool.query(`DROP TABLE IF EXISTS "${table}"`);
					await pool.end();
				},
			};
		},
		{ merge: true, subjects: true, count: true, selfExpiring: false, expiryResolutionMs: 1 },
		{ skip },
	);
}

// Through a real PgBouncer in transaction mode: each statement may run on another server connection.
storeConformance(
	"postgres through PgBouncer (transaction mode; url, setStatementTimeout: false, prepare: false)",
	async () => {
		const table = `sessions_test_${runId()}`;
		const store = postgresStore({ url: serviceURL.pgbouncer }, { table, gcInterval: 0, setStatementTimeout: false, prepare: false });
		return {
			store,
			async cleanup() {
				await store.close();
				const pool = newPool();
				await pool.query(`DROP TABLE IF EXISTS "${table}"`);
				await pool.end();
			},
		};
	},
	{ merge: true, subjects: true, count: true, selfExpiring: false, expiryResolutionMs: 1 },
	{ skip: skipBouncer },
);

/** A FATAL ErrorResponse of the wire protocol, as PgBouncer sends it for a startup packet it refuses. */
function fatal(code: string, message: string): Buffer {
	const fields = Buffer.from(`SFATAL\0VFATAL\0C${code}\0M${message}\0\0`, "utf8");
	const head = Buffer.alloc(5);
	head.write("E", 0, "latin1");
	head.writeInt32BE(fields.length + 4, 1);
	return Buffer.concat([head, fields]);
}

/**
 * What PgBouncer does with a client's startup packet, in front of the real server: it refuses
 * one that sets statement_timeout ("unsupported startup parameter"), as PgBouncer 1.x does,
 * and relays any other after `delayMs` (a slow new connection). Records what clients sent.
 */
async function pgbouncerStandIn(delayMs: number): Promise<{ url: string; sent(): string; close(): Promise<void> }> {
	const target = new URL(serviceURL.postgres);
	const sockets = new Set<Socket>();
	let sent = "";
	const server = createServer((client) => {
		sockets.add(client);
		client.on("error", () => undefined);
		client.once("data", (startup) => {
			sent += startup.toString("latin1");
			if (startup.includes("statement_timeout")) {
				client.end(fatal("08P01", "unsupported startup parameter: statement_timeout"));
				return;
			}
			setTimeout(() => {
				const upstream = connect(Number(target.port || 5432), target.hostname);
				sockets.add(upstream);
				upstream.on("error", () => client.destroy());
				client.on("data", (chunk) => {
					sent += chunk.toString("latin1");
					upstream.write(chunk);
				});
				client.on("close", () => upstream.destroy());
				upstream.on("close", () => client.destroy());
				upstream.write(startup);
				upstream.pipe(client);
			}, delayMs);
		});
	});
	await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
	const { port } = server.address() as { port: number };
	return {
		url: `postgres://${target.username}@127.0.0.1:${port}${target.pathname}`,
		sent: () => sent,
		async close() {
			for (const socket of sockets) socket.destroy();
			await new Promise((resolve) => server.close(resolve));
		},
	};
}

function assertStoreError(error: unknown): true {
	assert.ok(error instanceof SessionStoreError, `expected a SessionStoreError, got ${String(error)}`);
	assert.equal(error.store, "postgres");
	assert.match(error.message, /^sessionkit\/postgres: /);
	return true;
}

describe("postgres store", { skip }, () => {
	let admin: pg.Pool;
	const tables: string[] = [];

	function newTable(): string {
		const table = `sessions_test_${runId()}`;
		tables.push(table);
		return table;
	}

	async function exists(table: string): Promise<boolean> {
		const { rows } = await admin.query<{ t: string | null }>("SELECT to_regclass($1) AS t", [`"${table}"`]);
		return rows[0]!.t !== null;
	}

	async function rowCount(table: string): Promise<number> {
		const { rows } = await admin.query<{ n: string }>(`SELECT count(*) AS n FROM "${table}"`);
		return Number(rows[0]!.n);
	}

	before(() => {
		admin = newPool();
	});
	after(async () => {
		for (const table of tables) await admin.query(`DROP TABLE IF EXISTS "${table}"`);
		await admin.end();
	});

	it("refuses a table name that is not a plain, optionally schema-qualified identifier", () => {
		const pool = newPool();
		for (const table of ["sessions; DROP TABLE users", 'sessions"', "a.b.c", "", "1sessions", "ses-sions", ".sessions", "x".repeat(49)]) {
			assert.throws(() => postgresStore({ pool }, { table }), SessionConfigError, table);
			assert.throws(() => postgresSchema(table), SessionConfigError, table);
		}
		assert.equal(postgresStore({ pool }, { table: "app_1.Sessions_2", gcInterval: 0 }).table, "app_1.Sessions_2");
		return pool.end();
	});

	it("refuses bad options and connections at construction", () => {
		const pool = newPool();
		assert.throws(() => postgresStore({ pool }, { timeout: 0 }), SessionConfigError);
		assert.throws(() => postgresStore({ pool }, { timeout: Number.NaN }), SessionConfigError);
		assert.throws(() => postgresStore({ pool }, { gcInterval: -1 }), SessionConfigError);
		assert.throws(() => postgresStore({ pool }, { createTable: "yes" as unknown as boolean }), SessionConfigError);
		assert.throws(() => postgresStore({ pool }, { prepare: "yes" as unknown as boolean }), SessionConfigError);
		assert.throws(() => postgresStore({ url: serviceURL.postgres }, { setStatementTimeout: "no" as unknown as boolean }), SessionConfigError);
		// The app's pool keeps its own settings: the option would do nothing there.
		assert.throws(
			() => postgresStore({ pool }, { setStatementTimeout: false }),
			(error: unknown) => error instanceof SessionConfigError && error.option === "setStatementTimeout",
		);
		assert.throws(() => postgresStore({} as never), SessionConfigError);
		assert.throws(() => postgresStore({ pool, url: serviceURL.postgres } as never), SessionConfigError);
		assert.throws(() => postgresStore({ url: "" }), SessionConfigError);
		assert.throws(() => postgresStore({ pool: {} as pg.Pool }), SessionConfigError);
		return pool.end();
	});

	it("refuses an option it does not know (a typo would otherwise do nothing), naming it and the known ones", () => {
		const pool = newPool();
		assert.throws(
			() => postgresStore({ pool }, { tabel: "other" } as never),
			(error: unknown) =>
				error instanceof SessionConfigError &&
				error.option === "tabel" &&
				error.message === 'sessionkit: option "tabel" is not an option of postgresStore. Known: table, createTable, gcInterval, timeout, prepare, setStatementTimeout.',
		);
		assert.throws(
			() => postgresStore({ pool, client: pool } as never),
			(error: unknown) => error instanceof SessionConfigError && error.option === "client" && /Known: pool, url\.$/.test(error.message),
		);
		return pool.end();
	});

	it("refuses an option given in the connection argument, where it would be ignored, saying where it belongs", () => {
		const pool = newPool();
		assert.throws(
			() => postgresStore({ pool, table: "app_sessions" } as never),
			(error: unknown) => error instanceof SessionConfigError && error.option === "table" && /second argument/.test(error.message),
		);
		return pool.end();
	});

	it("quotes a string where an option wants a number or a boolean, so it cannot pass for one", () => {
		const pool = newPool();
		const cases: Array<[PostgresStoreOptions, RegExp]> = [
			[{ timeout: "5" as never }, /option "timeout" must be .*, got "5"\.$/],
			[{ gcInterval: "300" as never }, /option "gcInterval" must be .*, got "300"\.$/],
			[{ createTable: "false" as never }, /option "createTable" must be true or false, got "false"\.$/],
			[{ prepare: "false" as never }, /option "prepare" must be true or false, got "false"\.$/],
			[{ table: 5n as never }, /option "table" must be .*, got bigint\.$/],
		];
		for (const [options, message] of cases) assert.throws(() => postgresStore({ pool }, options), (error: unknown) => error instanceof SessionConfigError && message.test(error.message));
		return pool.end();
	});

	it("creates the table and its indexes on first use, once, even when several stores start together", async () => {
		const table = newTable();
		const pool = newPool({ max: 10 });
		const stores = Array.from({ length: 5 }, () => postgresStore({ pool }, { table, gcInterval: 0 }));
		assert.equal(await exists(table), false, "constructing a store does not touch the database");
		await Promise.all(stores.map((store) => store.get(randomKey())));
		assert.equal(await exists(table), true);
		const { rows } = await admin.query<{ indexname: string }>("SELECT indexname FROM pg_indexes WHERE tablename = $1 ORDER BY indexname", [table]);
		assert.deepEqual(rows.map((r) => r.indexname), [`${table}_expires_at_idx`, `${table}_pkey`, `${table}_subject_idx`]);
		await pool.end();
	});

	it("with createTable on, uses a table and indexes that exist already, with a role that may only read and write rows", async () => {
		const table = newTable();
		const partial = newTable();
		const role = `sessionkit_test_${runId()}`;
		await admin.query(postgresSchema(table));
		// A migration that forgot an index: creating it needs the table's owner.
		await admin.query(postgresSchema(partial));
		await admin.query(`DROP INDEX "${partial}_subject_idx"`);
		await admin.query(`CREATE ROLE "${role}" LOGIN; GRANT USAGE ON SCHEMA public TO "${role}"`);
		await admin.query(`GRANT SELECT, INSERT, UPDATE, DELETE ON "${table}", "${partial}" TO "${role}"`);
		const url = new URL(serviceURL.postgres);
		url.username = role;
		url.password = "";
		const pool = newPool({ connectionString: url.href });
		try {
			const store = postgresStore({ pool }, { table, gcInterval: 0 });
			const key = randomKey();
			const record = makeRecord({ subject: "s" });
			await store.set(key, record, record.idleExpiresAt);
			assert.deepEqual(await store.get(key), record);
			assert.equal(await store.merge(key, noChanges({ increment: { n: 1 } }), record.idleExpiresAt), true);

			const incomplete = postgresStore({ pool }, { table: partial, gcInterval: 0 });
			await assert.rejects(incomplete.get(key), (error: unknown) => {
				assertStoreError(error);
				assert.match((error as Error).message, /cannot create table "[^"]+" or its indexes: permission denied.*postgresSchema\(\) as the owner/);
				return true;
			});
		} finally {
			await pool.end();
			await admin.query(`DROP TABLE "${table}", "${partial}"; REVOKE ALL ON SCHEMA public FROM "${role}"; DROP ROLE "${role}"`);
		}
	});

	it("with createTable off, a missing table fails with a SessionStoreError that says what to run", async () => {
		const pool = newPool();
		const store = postgresStore({ pool }, { table: newTable(), createTable: false, gcInterval: 0 });
		await assert.rejects(store.get(randomKey()), (error: unknown) => {
			assertStoreError(error);
			assert.match((error as Error).message, /does not exist.*postgresSchema\(\)/);
			return true;
		});
		await pool.end();
	});

	it("postgresSchema is the DDL the store needs: it runs twice, and a store with createTable off works on it", async () => {
		const table = newTable();
		assert.match(postgresSchema(table), new RegExp(`CREATE TABLE IF NOT EXISTS "${table}"`));
		await admin.query(postgresSchema(table));
		await admin.query(postgresSchema(table));
		const store = postgresStore({ pool: admin }, { table, createTable: false, gcInterval: 0 });
		const key = randomKey();
		const record = makeRecord({ subject: "s" });
		await store.set(key, record, record.idleExpiresAt);
		assert.deepEqual(await store.get(key), record);
		await store.close();
	});

	describe("prepared statements", () => {
		async function preparedNames(pool: pg.Pool): Promise<string[]> {
			const { rows } = await pool.query<{ name: string }>("SELECT name FROM pg_prepared_statements ORDER BY name");
			return rows.map((row) => row.name);
		}

		it("are prepared once per connection and reused, unless prepare is false", async () => {
			const pool = newPool({ max: 1 });
			const store = postgresStore({ pool }, { table: newTable(), gcInterval: 0 });
			const key = randomKey();
			const record = makeRecord();
			await store.set(key, record, record.idleExpiresAt);
			assert.deepEqual(await store.get(key), record);
			const names = await preparedNames(pool);
			assert.equal(names.length, 2, names.join(", "));
			assert.match(names[0]!, /^sessionkit_get_[0-9a-f]{16}$/);
			assert.match(names[1]!, /^sessionkit_set_[0-9a-f]{16}$/);
			for (let i = 0; i < 3; i++) assert.deepEqual(await store.get(key), record);
			assert.deepEqual(await preparedNames(pool), names, "the same two statements, not one per call");
			await pool.end();

			const plainPool = newPool({ max: 1 });
			const plain = postgresStore({ pool: plainPool }, { table: newTable(), gcInterval: 0, prepare: false });
			await plain.set(key, record, record.idleExpiresAt);
			assert.deepEqual(await plain.get(key), record);
			assert.deepEqual(await preparedNames(plainPool), []);
			await plainPool.end();
		});

		it("of stores on two tables do not collide on one connection", async () => {
			const pool = newPool({ max: 1 });
			const first = postgresStore({ pool }, { table: newTable(), gcInterval: 0 });
			const second = postgresStore({ pool }, { table: newTable(), gcInterval: 0 });
			const key = randomKey();
			await first.set(key, makeRecord({ subject: "first" }), Date.now() + HOUR);
			await second.set(key, makeRecord({ subject: "second" }), Date.now() + HOUR);
			assert.equal((await first.get(key))?.subject, "first");
			assert.equal((await second.get(key))?.subject, "second");
			assert.equal((await preparedNames(pool)).length, 4);
			await pool.end();
		});

		it("keep working when the table is dropped and created again under them", async () => {
			const pool = newPool({ max: 1 });
			const table = newTable();
			await pool.query(postgresSchema(table));
			const store = postgresStore({ pool }, { table, createTable: false, gcInterval: 0 });
			const key = randomKey();
			const record = makeRecord();
			await store.set(key, record, record.idleExpiresAt);
			await pool.query(`DROP TABLE "${table}"`);
			await pool.query(postgresSchema(table));
			assert.equal(await store.get(key), null);
			await store.set(key, record, record.idleExpiresAt);
			assert.deepEqual(await store.get(key), record);
			await pool.end();
		});
	});

	it("works with a schema-qualified table", async () => {
		const table = newTable();
		const store = postgresStore({ pool: admin }, { table: `public.${table}`, gcInterval: 0 });
		const key = randomKey();
		await store.set(key, makeRecord(), Date.now() + HOUR);
		assert.ok(await store.get(key));
		assert.equal(await rowCount(table), 1);
		await store.close();
	});

	it("close(), and a second close() called meanwhile, wait for a gc statement of the timer still in flight (on the app's pool), and nothing runs after it", async () => {
		const table = newTable();
		await assertCloseWaitsForGc({
			makeStore: (gcInterval) => postgresStore({ pool: admin }, { table, gcInterval }),
			holder: await admin.connect(),
			// Not a row lock: gc skips locked rows (SKIP LOCKED).
			lock: ["BEGIN", `LOCK TABLE "${table}" IN ACCESS EXCLUSIVE MODE`],
			expiredRows: () => rowCount(table),
		});
	});

	it("gc() deletes expired rows and keeps live ones, and the gcInterval timer does it unprompted", async () => {
		const table = newTable();
		const store = postgresStore({ pool: admin }, { table, gcInterval: 0.2 });
		const live = randomKey();
		await store.set(live, makeRecord(), Date.now() + HOUR);
		for (let i = 0; i < 3; i++) await store.set(randomKey(), makeRecord(), Date.now() - 1000);
		assert.equal(await rowCount(table), 4);
		await sleep(700);
		assert.equal(await rowCount(table), 1, "the timer deleted the expired rows");
		assert.ok(await store.get(live));
		await store.close();

		const manual = postgresStore({ pool: admin }, { table, gcInterval: 0 });
		for (let i = 0; i < 1005; i++) await manual.set(randomKey(), makeRecord(), Date.now() - 1000);
		assert.equal(await manual.gc(), 1005, "gc goes on past one batch");
		assert.equal(await rowCount(table), 1);
		await manual.close();
	});

	it("merge increments exactly as applyChanges does, non-numbers counting as 0", async () => {
		const store = postgresStore({ pool: admin }, { table: newTable(), gcInterval: 0 });
		const key = randomKey();
		const record = makeRecord({ data: { text: '"abc"', fraction: "1.5", exp: "1e3", neg: "-7", bool: "true" } });
		await store.set(key, record, Date.now() + HOUR);
		const changes = noChanges({ set: { text: '"abc"' }, increment: { text: 2, fraction: 1, exp: 1, neg: -3, bool: 1, missing: 0.25 } });
		assert.equal(await store.merge(key, changes, Date.now() + HOUR), true);
		assert.deepEqual((await store.get(key))?.data, applyChanges(record, changes).data);
		await store.close();
	});

	it("merge increments a JSON number beyond a double's range (too small or too large) as JavaScript does, instead of failing", async () => {
		const store = postgresStore({ pool: admin }, { table: newTable(), gcInterval: 0 });
		// float8's cast refuses an underflow ("1e-400" is out of range), numeric's a huge exponent:
		// either failed every later merge of the session. To JavaScript they are 0 and Infinity.
		const data = { tiny: "1e-400", tinier: "1e-20000", vast: "1e200000", denormal: "5e-324", padded: "1e00005", wide: `0.${"0".repeat(5000)}5` };
		const record = makeRecord({ data });
		for (const name of Object.keys(data)) {
			const key = randomKey();
			await store.set(key, record, Date.now() + HOUR);
			const changes = noChanges({ increment: { [name]: 1 } });
			assert.equal(await store.merge(key, changes, Date.now() + HOUR), true, name);
			assert.equal(Number((await store.get(key))?.data[name]), Number(applyChanges(record, changes).data[name]), name);
		}
		await store.close();
	});

	it("merge adds as JavaScript does when the sum leaves a double's range (Infinity), instead of failing", async () => {
		const store = postgresStore({ pool: admin }, { table: newTable(), gcInterval: 0 });
		// float8's + refuses an overflow ("value out of range"): two parallel requests that each
		// added 1e308 to a counter of 0 made the second merge fail, where JavaScript gives Infinity.
		const cases: Array<[string, number]> = [
			["1e308", 1e308],
			["-1.5e308", -1e308],
			["1.7976931348623157e308", 1e292],
			["1.7976931348623157e308", 9e291],
			["1.7976931348623157e308", 1],
			["1e308", -1e308],
			["5e-324", 5e-324],
			["-5e-324", 1.7976931348623157e308],
			["8.98846567431158e307", 8.98846567431158e307],
		];
		for (const [stored, by] of cases) {
			const key = randomKey();
			const record = makeRecord({ data: { n: stored } });
			await store.set(key, record, Date.now() + HOUR);
			const changes = noChanges({ increment: { n: by } });
			assert.equal(await store.merge(key, changes, Date.now() + HOUR), true, `${stored} + ${by}`);
			assert.equal((await store.get(key))?.data.n, applyChanges(record, changes).data.n, `${stored} + ${by}`);
		}
		await store.close();
	});

	it("merge writes the text applyChanges writes, String(Number(old) + by), at a double's limits and where JavaScript and float8 print numbers differently", async () => {
		const store = postgresStore({ pool: admin }, { table: newTable(), gcInterval: 0 });
		const largest = `17976931348623157${"0".repeat(292)}`;
		// Where JavaScript's rounding flips (ties go to even): to Infinity at 2^1024 - 2^970, to 0 at 2^-1075.
		const toInfinity = (2n ** 1024n - 2n ** 970n).toString();
		const toZero = `0.${(5n ** 1075n).toString().padStart(1075, "0")}`;
		const cases: Array<[stored: string, by: number]> = [
			["1e308", 0],
			["1e308", 1e308],
			["1e308", -1e308],
			["-1.7976931348623157e308", 0],
			["-1.7976931348623157e308", -1e292],
			[largest, 0],
			[largest, 1],
			[`-${largest}.000000000000000000000000000001`, 0],
			["1.797693134862315807937289714053e308", 0],
			["1.797693134862315807937289714053e308", -1e308],
			[toInfinity, 1],
			[`${toInfinity.slice(0, -1)}1`, 0],
			[`-${toInfinity}`, 0],
			["5e-324", 0],
			["-5e-324", 0],
			["5e-324", 5e-324],
			["2.47032822920623275e-324", 0],
			[`${toZero}000000000000000000000000000001`, 0],
			[toZero, 0],
			[`-${toZero}`, 0],
			["1e-400", 0],
			["-0", 0],
			["-0", -1],
			["0.0", -0],
			["123456789012345678901234567890", 1],
			["0.100000000000000000000000000001", 0.2],
			["9007199254740993", 1],
			["1e14", 0],
			["1e15", 0],
			["-123456789012345.67", -1e5],
			["99999999999999999999", 0],
			["1e20", 1],
			["1e21", 0],
			["1.2345e25", 0],
			["0", 0.0001],
			["0", 0.00001],
			["0", -0.0000095],
			["0", 0.000001],
			["0", 1e-7],
			["-1.5e-9", 0],
			["1e-100", 0],
		];
		const key = randomKey();
		const record = makeRecord({ data: Object.fromEntries(cases.map(([stored], i) => [`n${i}`, stored])) });
		await store.set(key, record, Date.now() + HOUR);
		const changes = noChanges({ increment: Object.fromEntries(cases.map(([, by], i) => [`n${i}`, by])) });
		assert.equal(await store.merge(key, changes, Date.now() + HOUR), true);
		const data = (await store.get(key))!.data;
		const expected = applyChanges(record, changes).data;
		const sum = ([stored, by]: [string, number]): string => `${stored.length > 40 ? `${stored.slice(0, 20)}…(${stored.length} chars)` : stored} + ${by}`;
		assert.deepEqual(
			cases.map((c, i) => `${sum(c)} = ${data[`n${i}`]}`),
			cases.map((c, i) => `${sum(c)} = ${expected[`n${i}`]}`),
		);
		await store.close();
	});

	it("merges thousands of keys deleted, set and incremented in one change within a 2 s store timeout, as applyChanges does", async () => {
		// The increments re-read the data built by delete and set for each key, several times:
		// 100 keys took 50 ms, 1000 keys 18 s, so a large merge could only time out (now 4000: ~50 ms).
		const store = postgresStore({ url: serviceURL.postgres }, { table: newTable(), gcInterval: 0, timeout: 2 });
		const names = Array.from({ length: 4000 }, (_, i) => `k${i}`);
		const data = Object.fromEntries(names.map((name, i) => [name, i % 7 === 0 ? '"text"' : String(i)]));
		const flash = Object.fromEntries(names.slice(0, 1000).map((name) => [name, '"notice"']));
		const record = makeRecord({ data, flash });
		for (const clear of [false, true]) {
			const key = randomKey();
			await store.set(key, record, Date.now() + HOUR);
			const changes = noChanges({
				clear,
				delete: names.filter((_, i) => i % 3 === 0),
				set: Object.fromEntries(names.filter((_, i) => i % 2 === 0).map((name) => [name, "0.5"])),
				increment: Object.fromEntries([...names, "fresh"].map((name, i) => [name, i % 5 === 0 ? -1 : 0.1])),
				flashDelete: names.filter((_, i) => i % 4 === 0),
				flashSet: { k0: '"again"', k1: '"changed"', other: '"new"' },
			});
			assert.equal(await store.merge(key, changes, Date.now() + HOUR), true);
			assert.deepEqual(await store.get(key), applyChanges(record, changes), `clear: ${clear}`);
		}
		await store.close();
	});

	it("merges a delete of 20000 names, half of them absent, from 20000 keys within a 2 s store timeout", async () => {
		// jsonb's `-` compares every key with every name (of the same length): this took 3 s, an anti-join 0.1 s.
		const store = postgresStore({ url: serviceURL.postgres }, { table: newTable(), gcInterval: 0, timeout: 2 });
		const key = randomKey();
		const name = (prefix: string, i: number): string => `${prefix}${String(i).padStart(5, "0")}`;
		const record = makeRecord({ data: Object.fromEntries(Array.from({ length: 20000 }, (_, i) => [name("k", i), String(i)])) });
		await store.set(key, record, Date.now() + HOUR);
		const changes = noChanges({ delete: Array.from({ length: 20000 }, (_, i) => name(i % 2 === 0 ? "k" : "x", i)) });
		assert.equal(await store.merge(key, changes, Date.now() + HOUR), true);
		assert.deepEqual((await store.get(key))?.data, applyChanges(record, changes).data);
		await store.close();
	});

	it("keeps every parallel merge on connections whose default isolation is REPEATABLE READ or SERIALIZABLE", async () => {
		// There a statement that meets a parallel update of its row fails with a serialization
		// failure (40001), applying nothing: 20 parallel increments of one session lost about half.
		const pool = newPool({ max: 10, options: "-c default_transaction_isolation=repeatable\\ read" });
		const url = `${serviceURL.postgres}${serviceURL.postgres.includes("?") ? "&" : "?"}options=${encodeURIComponent("-c default_transaction_isolation=serializable")}`;
		const stores = [postgresStore({ pool }, { table: newTable(), gcInterval: 0 }), postgresStore({ url }, { table: newTable(), gcInterval: 0 })];
		for (const store of stores) {
			const key = randomKey();
			await store.set(key, makeRecord({ data: {} }), Date.now() + HOUR);
			const outcomes = await Promise.allSettled(Array.from({ length: 20 }, () => store.merge(key, noChanges({ increment: { n: 1 }, set: { [`k${runId()}`]: "1" } }), Date.now() + HOUR)));
			assert.deepEqual(outcomes.filter((outcome) => outcome.status === "rejected"), [], "no merge failed");
			const data = (await store.get(key))?.data ?? {};
			assert.equal(data.n, "20");
			assert.equal(Object.keys(data).length, 21);
			await Promise.all(Array.from({ length: 10 }, () => store.touch(key, Date.now() + 2 * HOUR, Date.now() + 2 * HOUR)));
			await store.close();
		}
		const { rows } = await pool.query<{ level: string }>("SELECT current_setting('default_transaction_isolation') AS level");
		assert.equal(rows[0]!.level, "repeatable read", "the pool's connections were as the test meant");
		await pool.end();
	});

	it("merge gives what applyChanges gives for every combination of changes present (each has its own statement)", async () => {
		const pool = newPool({ max: 2 });
		const store = postgresStore({ pool }, { table: newTable(), gcInterval: 0 });
		const parts: Array<Partial<RecordChanges>> = [
			{ clear: true },
			{ delete: ["name", "absent"] },
			{ set: { name: '"Ada"', added: "[1,2]" } },
			{ increment: { userId: 2, visits: 1 } },
			{ flashDelete: ["notice"] },
			{ flashSet: { info: '"saved"' } },
			{ subject: "user-9" },
		];
		for (let shape = 0; shape < 1 << parts.length; shape++) {
			const changes = noChanges(Object.assign({}, ...parts.filter((_, bit) => shape & (1 << bit))));
			const key = randomKey();
			const record = makeRecord({ subject: "user-1", data: { userId: "40", name: '"Zoë"', kept: "true" } });
			await store.set(key, record, Date.now() + HOUR);
			assert.equal(await store.merge(key, changes, Date.now() + HOUR), true, `shape ${shape}`);
			const expected = applyChanges(record, changes);
			assert.deepEqual(await store.get(key), { ...expected, idleExpiresAt: changes.idleExpiresAt }, `shape ${shape}: ${JSON.stringify(changes)}`);
		}
		await store.close();
		await pool.end();
	});

	describe("behind PgBouncer (a stand-in that refuses the statement_timeout startup parameter, as PgBouncer does)", () => {
		it("with url and the defaults, fails with an error that says which option to set", async () => {
			const bouncer = await pgbouncerStandIn(0);
			const store = postgresStore({ url: bouncer.url }, { table: newTable(), timeout: 2, gcInterval: 0 });
			try {
				await assert.rejects(store.get(randomKey()), (error: unknown) => {
					assertStoreError(error);
					assert.match((error as Error).message, /unsupported startup parameter: statement_timeout/);
					assert.match((error as Error).message, /setStatementTimeout: false/);
					return true;
				});
			} finally {
				await store.close();
				await bouncer.close();
			}
		});

		it("with setStatementTimeout: false, works and never sends statement_timeout, at startup or by SET after a slow connect", async () => {
			// A new connection takes 150 ms, past the 5% of the 1 s timeout a call may wait before
			// the store would lower its connection's limit with a SET.
			const bouncer = await pgbouncerStandIn(150);
			const store = postgresStore({ url: bouncer.url }, { table: newTable(), timeout: 1, gcInterval: 0, setStatementTimeout: false, prepare: false });
			try {
				const key = randomKey();
				const record = makeRecord({ data: { n: "0" } });
				await store.set(key, record, record.idleExpiresAt);
				await Promise.all(Array.from({ length: 4 }, () => store.merge(key, noChanges({ increment: { n: 1 } }), record.idleExpiresAt)));
				assert.deepEqual((await store.get(key))?.data, { n: "4" });
				assert.ok(bouncer.sent().includes("UPDATE"), "the calls went through the stand-in");
				assert.ok(!bouncer.sent().includes("statement_timeout"), "statement_timeout was sent");
			} finally {
				await store.close();
				await bouncer.close();
			}
		});

		it("through a real PgBouncer in transaction mode, with setStatementTimeout and prepare off", { skip: skipBouncer }, async () => {
			const url = serviceURL.pgbouncer;
			const refused = postgresStore({ url }, { table: newTable(), timeout: 2, gcInterval: 0 });
			await assert.rejects(refused.get(randomKey()), /setStatementTimeout: false/);
			await refused.close();
			const store = postgresStore({ url }, { table: newTable(), timeout: 2, gcInterval: 0, setStatementTimeout: false, prepare: false });
			const key = randomKey();
			const record = makeRecord({ data: { n: "0" } });
			await store.set(key, record, record.idleExpiresAt);
			await Promise.all(Array.from({ length: 8 }, () => store.merge(key, noChanges({ increment: { n: 1 } }), record.idleExpiresAt)));
			assert.deepEqual((await store.get(key))?.data, { n: "8" });
			assert.equal(await store.gc(), 0);
			await store.close();
		});
	});

	describe("faults", () => {
		it("a store pointed at a closed port rejects with a SessionStoreError naming the store, within the timeout", async () => {
			const store = postgresStore({ url: "postgres://postgres@127.0.0.1:1/test" }, { timeout: 1, gcInterval: 0 });
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
			const store = postgresStore({ url: `postgres://postgres@127.0.0.1:${port}/test` }, { timeout: 0.5, gcInterval: 0 });
			const started = Date.now();
			await assert.rejects(store.get(randomKey()), (error: unknown) => {
				assertStoreError(error);
				assert.match((error as Error).message, /timed out after 0.5 s|timeout/i);
				return true;
			});
			const elapsed = Date.now() - started;
			assert.ok(elapsed >= 450 && elapsed < 1500, `took ${elapsed} ms`);
			await store.close();
			for (const socket of sockets) socket.destroy();
			await new Promise((resolve) => silent.close(resolve));
		});

		it("a call blocked by another transaction's row lock times out, is not applied late, and the store carries on", async () => {
			const table = newTable();
			const store = postgresStore({ url: serviceURL.postgres }, { table, timeout: 1, gcInterval: 0 });
			const key = randomKey();
			const record = makeRecord();
			await store.set(key, record, record.idleExpiresAt);

			const locker = await admin.connect();
			try {
				await locker.query("BEGIN");
				await locker.query(`SELECT 1 FROM "${table}" WHERE key = $1 FOR UPDATE`, [key]);
				const started = Date.now();
				await assert.rejects(store.touch(key, record.idleExpiresAt + HOUR, record.idleExpiresAt + HOUR), assertStoreError);
				assert.ok(Date.now() - started < 1500, `took ${Date.now() - started} ms`);
				await sleep(300);
				await locker.query("COMMIT");
			} finally {
				locker.release();
			}
			await sleep(200);
			assert.equal((await store.get(key))?.idleExpiresAt, record.idleExpiresAt, "the server cancelled the timed-out statement");
			await store.touch(key, record.idleExpiresAt + HOUR, record.idleExpiresAt + HOUR);
			assert.equal((await store.get(key))?.idleExpiresAt, record.idleExpiresAt + HOUR);
			await store.close();
		});

		it("a call that timed out waiting for one of the app's pool connections does not send its statement when one frees up", async () => {
			const pool = newPool({ max: 1 });
			const store = postgresStore({ pool }, { table: newTable(), timeout: 0.5, gcInterval: 0 });
			const key = randomKey();
			const record = makeRecord();
			await store.set(key, record, record.idleExpiresAt);
			// The app holds the pool's one connection past the store's timeout.
			const held = await pool.connect();
			try {
				await assert.rejects(store.touch(key, record.idleExpiresAt + HOUR, record.idleExpiresAt + HOUR), (error: unknown) => {
					assertStoreError(error);
					assert.match((error as Error).message, /timed out after 0.5 s/);
					return true;
				});
			} finally {
				held.release();
			}
			await sleep(200);
			assert.equal((await store.get(key))?.idleExpiresAt, record.idleExpiresAt, "the touch that timed out was never sent");
			await store.close();
			await pool.end();
		});

		describe("a call that waited for one of the store's own connections", () => {
			// The pool made from url holds pg's default of 10 connections.
			const POOL_SIZE = 10;

			/** Resolves once `count` of the store's connections wait for a lock. */
			async function waitForLockWaits(applicationName: string, count: number): Promise<void> {
				for (let waited = 0; waited < 3000; waited += 10) {
					const { rows } = await admin.query<{ n: number }>(
						"SELECT count(*)::int AS n FROM pg_stat_activity WHERE application_name = $1 AND wait_event_type = 'Lock'",
						[applicationName],
					);
					if (rows[0]!.n >= count) return;
					await sleep(10);
				}
				assert.fail(`fewer than ${count} of the store's connections waited for the lock`);
			}

			async function lockRow(table: string, key: string): Promise<pg.PoolClient> {
				const locker = await admin.connect();
				await locker.query("BEGIN");
				await locker.query(`SELECT 1 FROM "${table}" WHERE key = $1 FOR UPDATE`, [key]);
				return locker;
			}

			it("is cancelled by the server within the time the call had left, so a merge that timed out is never applied", async () => {
				const table = newTable();
				const applicationName = `sessionkit_test_${runId()}`;
				const store = postgresStore({ url: `${serviceURL.postgres}?application_name=${applicationName}` }, { table, timeout: 1, gcInterval: 0 });
				const key = randomKey();
				const record = makeRecord({ data: { n: "0" } });
				await store.set(key, record, record.idleExpiresAt);

				const locker = await lockRow(table, key);
				try {
					// Every connection of the store waits for the row, so the merge waits for a connection.
					const busy = Array.from({ length: POOL_SIZE }, () => store.touch(key, record.idleExpiresAt + HOUR, record.idleExpiresAt + HOUR).catch((error: unknown) => error));
					await waitForLockWaits(applicationName, POOL_SIZE);
					const started = Date.now();
					await assert.rejects(store.merge(key, noChanges({ increment: { n: 1 } }), record.idleExpiresAt), assertStoreError);
					assert.ok(Date.now() - started < 1100, `took ${Date.now() - started} ms`);
					for (const outcome of await Promise.all(busy)) assertStoreError(outcome);
				} finally {
					// Released after the merge was reported as failed: a statement still waiting would now apply.
					await locker.query("COMMIT");
					locker.release();
				}
				await sleep(300);
				assert.deepEqual(await store.get(key), record, "neither the merge nor the touches were applied late");
				await store.close();
			});

			it("runs with the time it had left, and leaves the connection's own limit as it was", async () => {
				const table = newTable();
				const applicationName = `sessionkit_test_${runId()}`;
				// The server gives each statement 90% of the 2 s: 1.8 s, less the time a call waited.
				const store = postgresStore({ url: `${serviceURL.postgres}?application_name=${applicationName}` }, { table, timeout: 2, gcInterval: 0 });
				const key = randomKey();
				const record = makeRecord({ data: { n: "0" } });
				await store.set(key, record, record.idleExpiresAt);

				let locker = await lockRow(table, key);
				const busy = Array.from({ length: POOL_SIZE }, () => store.touch(key, record.idleExpiresAt, record.idleExpiresAt));
				await waitForLockWaits(applicationName, POOL_SIZE);
				const merged = store.merge(key, noChanges({ increment: { n: 1 } }), record.idleExpiresAt);
				// The merge waits 1 s for a connection, then runs with the 0.8 s it has left.
				await sleep(1000);
				await locker.query("COMMIT");
				locker.release();
				await Promise.all(busy);
				assert.equal(await merged, true);
				assert.deepEqual((await store.get(key))?.data, { n: "1" });

				// Held 1.3 s: past the 0.8 s the merge had, within the pool's 1.8 s. Ten calls use
				// every connection, the merge's among them.
				locker = await lockRow(table, key);
				const calls = Array.from({ length: POOL_SIZE }, () => store.touch(key, record.idleExpiresAt + HOUR, record.idleExpiresAt + HOUR));
				await waitForLockWaits(applicationName, POOL_SIZE);
				await sleep(1300);
				await locker.query("COMMIT");
				locker.release();
				await Promise.all(calls);
				assert.equal((await store.get(key))?.idleExpiresAt, record.idleExpiresAt + HOUR);
				await store.close();
			});
		});

		it("recovers by itself after the server terminates every one of its connections", async () => {
			const applicationName = `sessionkit_test_${runId()}`;
			const pool = newPool({ application_name: applicationName, max: 4 });
			const store = postgresStore({ pool }, { table: newTable(), gcInterval: 0 });
			const key = randomKey();
			await store.set(key, makeRecord(), Date.now() + HOUR);
			await Promise.all(Array.from({ length: 4 }, () => store.get(key)));
			const { rowCount: terminated } = await admin.query(
				"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1",
				[applicationName],
			);
			assert.ok((terminated ?? 0) >= 1, "the store had connections to terminate");
			// The pool drops each client as the server's goodbye arrives; no one tells the store.
			for (let waited = 0; pool.totalCount > 0 && waited < 2000; waited += 20) await sleep(20);
			assert.equal(pool.totalCount, 0);
			assert.ok(await store.get(key), "the next call opens a new connection");
			await store.close();
			await pool.end();
		});
	});
});
