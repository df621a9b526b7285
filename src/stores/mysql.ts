import { setTimeout as sleep } from "node:timers/promises";
import type { Pool, PoolConnection, ResultSetHeader, RowDataPacket } from "mysql2/promise";
import { SessionConfigError, SessionStoreError } from "../core/errors.js";
import type { AsyncSessionStore, RecordChanges, StoredRecord, SubjectSession } from "../core/store.js";
import { applyChanges } from "../core/store.js";
import { startGCTimer, validateGCInterval } from "./internal/gc-timer.js";
import type { TableName } from "./internal/sql-common.js";
import { checkConnection, checkCreateTable, closeOnce, jsonColumn, messageOf, onceUntilSuccess, parseTable, withDeadline } from "./internal/sql-common.js";
import { checkTimeout } from "./internal/timeout.js";
import { checkStoreArguments } from "./internal/option-keys.js";

/** How {@link mysqlStore} reaches the database: the app's pool, or a URL for a pool of its own. */
export type MySQLStoreConnection =
	| {
			/** A `mysql2/promise` pool the app owns (TLS, sizing). The store never ends it. */
			pool: Pool;
			url?: undefined;
	  }
	| {
			/**
			 * A connection URL (`mysql://user:password@host:3306/db`). The store creates a pool and
			 * ends it in `close()`. Its idle connections do not keep the process alive (like pg's
			 * `allowExitOnIdle`), so a script that never calls `close()` still exits once its calls
			 * have settled; a call in flight does keep it alive.
			 */
			url: string;
			pool?: undefined;
	  };

/** Options of {@link mysqlStore}. */
export interface MySQLStoreOptions {
	/**
	 * The table, optionally database-qualified (`"app.sessions"`). Each part is a plain identifier
	 * (`/^[A-Za-z_][A-Za-z0-9_]*$/`, table at most 48 characters), always backtick-quoted in SQL.
	 * Anything else throws `SessionConfigError` at construction.
	 * @default "sessions"
	 */
	table?: string;
	/**
	 * Create the table and its indexes on first use (`CREATE TABLE IF NOT EXISTS`, which the
	 * server's metadata lock makes safe when several processes start together). Needs the CREATE
	 * privilege; set `false` when migrations create {@link mysqlSchema} and the app's user may only
	 * read and write rows.
	 * @default true
	 */
	createTable?: boolean;
	/** Seconds between deletions of expired rows; 0 turns the timer off (`gc()` still works). @default 300 (5 minutes) */
	gcInterval?: number;
	/**
	 * Seconds each call may take, waiting for a pool connection included, before it rejects with
	 * `SessionStoreError`. A pool created from `url` also gets it as its connect timeout and as
	 * `innodb_lock_wait_timeout` (rounded up), which bounds a wait for a row lock from when that
	 * wait starts. A `merge` that timed out is rolled back; any other write that timed out may
	 * still be applied afterwards (see the docs).
	 * @default 5
	 */
	timeout?: number;
}

type Capabilities = "merge" | "listBySubject" | "deleteBySubject" | "count" | "gc" | "close";

/** The MySQL/MariaDB store: every optional capability of {@link AsyncSessionStore} is present. */
export interface MySQLStore extends Omit<AsyncSessionStore, Capabilities>, Required<Pick<AsyncSessionStore, Capabilities>> {
	/** The table the store uses, as given (`"sessions"`, `"app.sessions"`). */
	readonly table: string;
}

const STORE = "mysql";
const GC_BATCH = 1000;
// A deadlock's victim waits up to 5 ms before its first retry, twice that before each next one, at most 100 ms.
const FIRST_BACKOFF_MS = 5;
const MAX_BACKOFF_MS = 100;

function quoted(table: TableName): string {
	return table.schema === null ? `\`${table.name}\`` : `\`${table.schema}\`.\`${table.name}\``;
}

/**
 * The DDL the store runs on first use (`CREATE TABLE IF NOT EXISTS`, indexes included), for apps
 * that create their schema in migrations. The same statement works on MySQL 8 and MariaDB 10.5+.
 * Throws `SessionConfigError` if `table` is not a valid name (see {@link MySQLStoreOptions.table}).
 *
 * `key` and `subject` are VARBINARY so that they compare byte for byte: a case-insensitive or
 * PAD SPACE collation would let `ALICE` or `alice ` match the sessions of `alice`. `subject`
 * holds 768 bytes: a session's subject is at most 256 UTF-16 units, 3 UTF-8 bytes each. Times are
 * BIGINT epoch milliseconds, compared with the app's clock (the one that set them).
 *
 * @example
 * await pool.query(mysqlSchema("sessions"));
 */
export function mysqlSchema(table = "sessions"): string {
	return schema(parseTable(table));
}

function schema(table: TableName): string {
	return [
		`CREATE TABLE IF NOT EXISTS ${quoted(table)} (`,
		"  `key` VARBINARY(64) NOT NULL,",
		"  `data` JSON NOT NULL,",
		"  `flash` JSON NOT NULL,",
		"  `subject` VARBINARY(768) NULL,",
		"  `created_at` BIGINT NOT NULL,",
		"  `idle_expires_at` BIGINT NOT NULL,",
		"  `absolute_expires_at` BIGINT NOT NULL,",
		"  `expires_at` BIGINT NOT NULL,",
		"  PRIMARY KEY (`key`),",
		`  KEY \`${table.name}_expires_at_idx\` (\`expires_at\`),`,
		`  KEY \`${table.name}_subject_idx\` (\`subject\`)`,
		") ENGINE=InnoDB DEFAULT CHARSET=utf8mb4",
	].join("\n");
}

interface Row extends RowDataPacket {
	data: unknown;
	flash: unknown;
	subject: Buffer | string | null;
	created_at: number | string;
	idle_expires_at: number | string;
	absolute_expires_at: number | string;
}

interface SubjectRow extends RowDataPacket {
	key: Buffer | string;
	created_at: number | string;
	idle_expires_at: number | string;
	absolute_expires_at: number | string;
}

function text(value: Buffer | string): string {
	return typeof value === "string" ? value : value.toString("utf8");
}

// Number(): a pool with supportBigNumbers/bigNumberStrings hands BIGINT over as a string.
function fromRow(row: Row): StoredRecord {
	return {
		data: jsonColumn(row.data),
		flash: jsonColumn(row.flash),
		subject: row.subject === null ? null : text(row.subject),
		createdAt: Number(row.created_at),
		idleExpiresAt: Number(row.idle_expires_at),
		absoluteExpiresAt: Number(row.absolute_expires_at),
	};
}

/**
 * A string value as bytes, which mysql2 writes as a hex literal (`X'…'`). mysql2 escapes a string
 * with backslashes whatever the sql_mode: under NO_BACKSLASH_ESCAPES the server keeps them, so
 * every JSON object was stored mangled, and a `'` in a value ended its literal (SQL injection).
 * A hex literal reads the same in every mode. `key` and `subject` are VARBINARY, compared as
 * these bytes; JSON goes through {@link JSON_TEXT}.
 */
function bytes(text: string): Buffer {
	return Buffer.from(text, "utf8");
}

/**
 * Where a JSON column takes {@link jsonValue}: its backslashes come back from byte 01, which a JSON
 * text never holds raw (JSON escapes every control character). Replaced as bytes, not by a
 * collation; MySQL 8 refuses JSON from a binary string, hence the outer CONVERT.
 */
const JSON_TEXT = "CONVERT(REPLACE(CONVERT(? USING utf8mb4), X'01', X'5C') USING utf8mb4)";

/**
 * `value`'s JSON text as a plain literal without a backslash (each one sent as byte 01, see
 * {@link JSON_TEXT}), its quotes doubled: it reads the same in every sql_mode, and is never longer
 * than mysql2's escaping made it. As a hex literal, twice its size, a value of half
 * max_allowed_packet (16 MB on MariaDB) no longer fitted.
 */
function jsonValue(value: Record<string, string>): { toSqlString(): string } {
	const text = JSON.stringify(value);
	return { toSqlString: () => `'${text.replace(/\\/g, "\x01").replace(/'/g, "''")}'` };
}

function subjectValue(subject: string | null): Buffer | null {
	return subject === null ? null : bytes(subject);
}

function recordValues(record: StoredRecord, expiresAt: number): unknown[] {
	return [
		jsonValue(record.data),
		jsonValue(record.flash),
		subjectValue(record.subject),
		record.createdAt,
		record.idleExpiresAt,
		record.absoluteExpiresAt,
		expiresAt,
	];
}

function statements(table: TableName) {
	const t = quoted(table);
	const columns = "`data`, `flash`, `subject`, `created_at`, `idle_expires_at`, `absolute_expires_at`";
	return {
		create: schema(table),
		get: `SELECT ${columns} FROM ${t} WHERE \`key\` = ? AND \`expires_at\` > ?`,
		lock: `SELECT ${columns} FROM ${t} WHERE \`key\` = ? AND \`expires_at\` > ? FOR UPDATE`,
		// REPLACE rather than INSERT … ON DUPLICATE KEY UPDATE: VALUES() there is deprecated in
		// MySQL 8 and its replacement (a row alias) does not exist in MariaDB.
		set: `REPLACE INTO ${t} (\`key\`, ${columns}, \`expires_at\`) VALUES (?, ${JSON_TEXT}, ${JSON_TEXT}, ?, ?, ?, ?, ?)`,
		// affectedRows counts matched rows here because mysql2 sets CLIENT_FOUND_ROWS by default.
		replace: `UPDATE ${t} SET \`data\` = ${JSON_TEXT}, \`flash\` = ${JSON_TEXT}, \`subject\` = ?, \`created_at\` = ?, \`idle_expires_at\` = ?, \`absolute_expires_at\` = ?, \`expires_at\` = ?
			WHERE \`key\` = ? AND \`expires_at\` > ?`,
		update: `UPDATE ${t} SET \`data\` = ${JSON_TEXT}, \`flash\` = ${JSON_TEXT}, \`subject\` = ?, \`idle_expires_at\` = ?, \`expires_at\` = ? WHERE \`key\` = ?`,
		delete: `DELETE FROM ${t} WHERE \`key\` = ?`,
		touch: `UPDATE ${t} SET \`idle_expires_at\` = ?, \`expires_at\` = ? WHERE \`key\` = ? AND \`expires_at\` > ?`,
		listBySubject: `SELECT \`key\`, \`created_at\`, \`idle_expires_at\`, \`absolute_expires_at\` FROM ${t} WHERE \`subject\` = ? AND \`expires_at\` > ? ORDER BY \`created_at\``,
		// Expired rows of the subject are left to gc, so the count is of live sessions only.
		deleteBySubject: `DELETE FROM ${t} WHERE \`subject\` = ? AND \`expires_at\` > ?`,
		count: `SELECT COUNT(*) AS n FROM ${t} WHERE \`expires_at\` > ?`,
		// In batches, so a large backlog never holds thousands of row locks or outlives the timeout.
		gc: `DELETE FROM ${t} WHERE \`expires_at\` <= ? LIMIT ${GC_BATCH}`,
	};
}

/**
 * ER_LOCK_DEADLOCK (1213): InnoDB chose this transaction as a deadlock's victim and rolled all of
 * it back, so it can run again from its start. Not ER_LOCK_WAIT_TIMEOUT (1205): InnoDB rolls back
 * only the statement, and only after waiting innodb_lock_wait_timeout for a lock that a long
 * transaction holds. On the store's own pool that wait is at least `timeout`, so no time is left;
 * on the app's pool its length is the app's choice, and a retry would wait for the same holder.
 */
function isDeadlock(error: unknown): boolean {
	return (error as { errno?: unknown } | null)?.errno === 1213;
}

/**
 * Waits a random few milliseconds, longer after each retry, so that the two sides of a deadlock
 * that both retry do not meet again at once. Ends early when the call's deadline passes.
 */
async function deadlockBackoff(retries: number, signal: AbortSignal): Promise<void> {
	const ceilingMs = Math.min(MAX_BACKOFF_MS, FIRST_BACKOFF_MS * 2 ** retries);
	await sleep(Math.random() * ceilingMs, undefined, { signal }).catch(() => undefined);
}

/**
 * Runs `attempt` again from its start each time InnoDB rolls it back as a deadlock's victim, until
 * it succeeds or the call's deadline passes. Safe because nothing of a victim is left applied: a
 * single statement, or merge's whole transaction (so a merge never adds its increments twice).
 */
async function retryingDeadlocks<T>(signal: AbortSignal, attempt: () => Promise<T>): Promise<T> {
	for (let retries = 0; ; retries++) {
		try {
			return await attempt();
		} catch (error) {
			if (!isDeadlock(error)) throw error;
			await deadlockBackoff(retries, signal);
			if (signal.aborted) throw error;
		}
	}
}

/** What the store needs of a connection's socket. */
interface Referable {
	ref(): unknown;
	unref(): unknown;
}

/** The connection's socket (the TLS one after an upgrade), unless it is a custom stream that cannot be unref'd. */
function socketOf(connection: object): Referable | undefined {
	const stream = (connection as { stream?: Partial<Referable> }).stream;
	return typeof stream?.ref === "function" && typeof stream.unref === "function" ? (stream as Referable) : undefined;
}

async function createPool(url: string, timeout: number): Promise<Pool> {
	let mysql: typeof import("mysql2/promise");
	try {
		mysql = await import("mysql2/promise");
	} catch (error) {
		throw new SessionConfigError(
			"url",
			`needs the "mysql2" package to connect, and it could not be loaded. Install it (npm install mysql2), or pass { pool }.`,
			{ cause: error },
		);
	}
	const pool = mysql.createPool({ uri: url, connectTimeout: Math.ceil(timeout * 1000) });
	// The client's timeout cannot stop a statement the server is running. A lock wait is what
	// keeps a statement running on a healthy server, and this bounds it on MySQL and MariaDB alike,
	// but from when the wait starts, not from the call: it bounds how late, not whether.
	pool.pool.on("connection", (connection) => {
		connection.query(`SET SESSION innodb_lock_wait_timeout = ${Math.ceil(timeout)}`, () => undefined);
	});
	// Like pg's allowExitOnIdle (the Postgres store's pool) and the gc timer: an idle connection
	// never keeps the process alive, so a script that forgot close() still exits. mysql2 emits
	// "release" when a connection joins the free list and "acquire" when one leaves it (a
	// connection handed straight to a waiting call does neither, and stays ref'd), so a call in
	// flight holds the process as before. No round trip: ref and unref only flag the socket.
	// (mysql2's idleTimeout cannot do this: it closes connections only when maxIdle is below
	// connectionLimit, with a 1 s timer of its own that keeps the process alive until end().)
	pool.pool.on("release", (connection) => socketOf(connection)?.unref());
	pool.pool.on("acquire", (connection) => socketOf(connection)?.ref());
	return pool;
}

/**
 * Sessions in a MySQL 8 or MariaDB 10.5+ table through `mysql2`: shared by every app instance,
 * with atomic `merge` (a transaction that locks the row, so parallel requests never lose each
 * other's changes), an indexed subject for "log out everywhere", and batched gc of expired rows.
 *
 * Pass `{ pool }` to use the app's `mysql2/promise` pool (the store never ends it), or `{ url }`
 * to have the store create a pool and end it in `close()`; that pool's idle connections never
 * keep the process alive, so forgetting `close()` does not hang a script. With `url`, mysql2 is
 * loaded on first use, and a missing package makes that first call reject with
 * `SessionConfigError`; importing this module loads no driver. The connection's character set must be utf8mb4 (mysql2's default),
 * and the pool must keep mysql2's default `CLIENT_FOUND_ROWS` flag.
 *
 * A row past its `expires_at` is never returned, even before gc deletes it. A call that InnoDB
 * rolls back as a deadlock's victim (error 1213: `deleteBySubject` against a write that changes
 * the subject of, or deletes, one of that subject's sessions) runs again from its start, its
 * statement or merge's whole transaction, after a random pause of a few milliseconds, while it is
 * within `timeout`. Every call rejects with `SessionStoreError` (the driver's error as `cause`)
 * on any other database failure, a lock wait timeout (1205) included, or when it takes longer
 * than `timeout`.
 *
 * Throws `SessionConfigError` at construction for a bad `table`, `createTable`, `gcInterval` or
 * `timeout`, an option it does not know (in either argument), or unless exactly one of `pool`
 * and `url` is given.
 *
 * @example
 * import mysql from "mysql2/promise";
 * const pool = mysql.createPool(process.env.DATABASE_URL!);
 * const sessions = createSessions({ store: mysqlStore({ pool }) });
 */
export function mysqlStore(connection: MySQLStoreConnection, options: MySQLStoreOptions = {}): MySQLStore {
	checkStoreArguments("mysqlStore", connection, ["pool", "url"], options, ["table", "createTable", "gcInterval", "timeout"]);
	const kind = checkConnection(connection, "mysql2/promise");
	if (kind === "pool" && typeof (connection.pool as unknown as { promise?: unknown }).promise === "function") {
		throw new SessionConfigError("pool", "must be a mysql2/promise pool; pass pool.promise() instead of the callback pool.");
	}
	const tableOption = options.table ?? "sessions";
	const table = parseTable(tableOption);
	const createTable = checkCreateTable(options.createTable);
	const gcInterval = validateGCInterval(options.gcInterval, 300);
	const timeout = checkTimeout(options.timeout, 5);
	const timeoutMs = Math.ceil(timeout * 1000);
	const sql = statements(table);

	let owned: Promise<Pool> | undefined;
	let closed = false;
	const connect: () => Promise<Pool> =
		kind === "pool" ? () => Promise.resolve(connection.pool!) : onceUntilSuccess(() => (owned = createPool(connection.url!, timeout)));
	const ensureTable = onceUntilSuccess(async () => {
		const pool = await connect();
		await onConnection(await pool.getConnection(), (connection) => send(connection, sql.create, undefined));
	});

	function explain(error: unknown): string {
		if ((error as { errno?: unknown }).errno === 1146) {
			return `table ${quoted(table)} does not exist. Create it with mysqlSchema() (in a migration), or set createTable: true so the store creates it on its first call; see docs/stores/mysql.md.`;
		}
		return messageOf(error);
	}

	function run<T>(operation: string, work: (pool: Pool, signal: AbortSignal) => Promise<T>): Promise<T> {
		if (closed) return Promise.reject(new SessionStoreError(STORE, `${operation} called after close().`));
		return withDeadline(
			STORE,
			operation,
			timeout,
			async (signal) => {
				const pool = await connect();
				if (createTable) await ensureTable();
				return work(pool, signal);
			},
			explain,
		);
	}

	/**
	 * A connection for a call that can still use it. mysql2 sends a statement whenever a connection
	 * frees up, however late: one the caller was already told has failed is not sent at all.
	 */
	async function connectionInTime(pool: Pool, signal: AbortSignal): Promise<PoolConnection> {
		const connection = await pool.getConnection();
		if (signal.aborted) {
			connection.release();
			throw new Error("the deadline passed before a connection was free");
		}
		return connection;
	}

	/**
	 * Runs `work` on `connection`, then puts the connection back in the pool; on any error that
	 * reaches here (mysql2's own timeout included) closes it instead, which also makes the server
	 * roll back whatever transaction it was in. A statement that timed out is still running on the
	 * server, and mysql2 would queue every later call on that connection behind it: put back, it
	 * would make unrelated calls time out too, for as long as the statement waits (a row lock: up
	 * to innodb_lock_wait_timeout, 50 s by default). A deadlock retried inside `work` keeps it.
	 */
	async function onConnection<T>(connection: PoolConnection, work: (connection: PoolConnection) => Promise<T>): Promise<T> {
		let result: T;
		try {
			result = await work(connection);
		} catch (error) {
			connection.destroy();
			throw error;
		}
		connection.release();
		return result;
	}

	async function send<T extends RowDataPacket[] | ResultSetHeader>(connection: PoolConnection, text: string, values: unknown[] | undefined): Promise<T> {
		const [result] = await connection.query<T>({ sql: text, values, timeout: timeoutMs });
		return result;
	}

	// Each statement is a transaction of its own (autocommit), retried whole after a deadlock.
	function statement<T extends RowDataPacket[] | ResultSetHeader>(operation: string, text: string, values: unknown[]): Promise<T> {
		return run(operation, async (pool, signal) =>
			onConnection(await connectionInTime(pool, signal), (connection) => retryingDeadlocks(signal, () => send<T>(connection, text, values))),
		);
	}

	function rows<R extends RowDataPacket>(operation: string, text: string, values: unknown[]): Promise<R[]> {
		return statement<R[]>(operation, text, values);
	}

	async function affected(operation: string, text: string, values: unknown[]): Promise<number> {
		return (await statement<ResultSetHeader>(operation, text, values)).affectedRows;
	}

	// A transaction that reads the row FOR UPDATE, applies the changes with the contract's own
	// applyChanges, and writes it back. The one-statement alternative (JSON_SET/JSON_REMOVE)
	// needs a JSON path per user key, and MySQL and MariaDB disagree on how to quote a key that
	// holds `"`, `.` or `*`; the row lock makes this just as atomic, for three more round trips.
	// A deadlock (merge holds the row's lock and then needs the subject index entry that
	// deleteBySubject has locked, say) rolls all of it back: see retryingDeadlocks.
	async function mergeRow(connection: PoolConnection, key: string, changes: RecordChanges, expiresAt: number, signal: AbortSignal): Promise<boolean> {
		await connection.query({ sql: "START TRANSACTION", timeout: timeoutMs });
		const [found] = await connection.query<Row[]>({ sql: sql.lock, values: [bytes(key), Date.now()], timeout: timeoutMs });
		if (!found[0]) {
			await connection.query({ sql: "ROLLBACK", timeout: timeoutMs });
			return false;
		}
		const next = applyChanges(fromRow(found[0]), changes);
		await connection.query({
			sql: sql.update,
			values: [jsonValue(next.data), jsonValue(next.flash), subjectValue(next.subject), next.idleExpiresAt, expiresAt, bytes(key)],
			timeout: timeoutMs,
		});
		// The caller has been told this merge failed; committing it now would make that a lie.
		if (signal.aborted) throw new Error("the deadline passed before COMMIT");
		await connection.query({ sql: "COMMIT", timeout: timeoutMs });
		return true;
	}

	const store: MySQLStore = {
		name: STORE,
		table: tableOption,
		async get(key) {
			const [row] = await rows<Row>("get", sql.get, [bytes(key), Date.now()]);
			return row ? fromRow(row) : null;
		},
		async set(key, record, expiresAt) {
			await affected("set", sql.set, [bytes(key), ...recordValues(record, expiresAt)]);
		},
		async replace(key, record, expiresAt) {
			return (await affected("replace", sql.replace, [...recordValues(record, expiresAt), bytes(key), Date.now()])) === 1;
		},
		merge(key, changes, expiresAt) {
			return run("merge", async (pool, signal) =>
				onConnection(await connectionInTime(pool, signal), (connection) =>
					retryingDeadlocks(signal, () => mergeRow(connection, key, changes, expiresAt, signal)),
				),
			);
		},
		async delete(key) {
			await affected("delete", sql.delete, [bytes(key)]);
		},
		async touch(key, idleExpiresAt, expiresAt) {
			await affected("touch", sql.touch, [idleExpiresAt, expiresAt, bytes(key), Date.now()]);
		},
		async listBySubject(subject) {
			const found = await rows<SubjectRow>("listBySubject", sql.listBySubject, [bytes(subject), Date.now()]);
			return found.map(
				(row): SubjectSession => ({
					key: text(row.key),
					createdAt: Number(row.created_at),
					idleExpiresAt: Number(row.idle_expires_at),
					absoluteExpiresAt: Number(row.absolute_expires_at),
				}),
			);
		},
		deleteBySubject(subject) {
			return affected("deleteBySubject", sql.deleteBySubject, [bytes(subject), Date.now()]);
		},
		async count() {
			const [row] = await rows<RowDataPacket & { n: number | string }>("count", sql.count, [Date.now()]);
			return Number(row?.n ?? 0);
		},
		async gc() {
			let deleted = 0;
			for (;;) {
				const batch = await affected("gc", sql.gc, [Date.now()]);
				deleted += batch;
				if (batch < GC_BATCH) return deleted;
			}
		},
		close: closeOnce(
			() => stopGC(),
			() => (closed = true),
			async () => {
				const pool = await owned?.catch(() => undefined);
				// mysql2 ends every connection, but reports again the error of one that had already
				// failed (a refused or timed-out connect): the pool is closed all the same.
				await pool?.end().catch(() => undefined);
			},
		),
	};
	const stopGC = startGCTimer(gcInterval, () => store.gc());
	return store;
}
