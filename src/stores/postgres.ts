import { createHash } from "node:crypto";
import { performance } from "node:perf_hooks";
import type { Pool, PoolClient, QueryConfig, QueryResult, QueryResultRow } from "pg";
import { SessionConfigError, SessionStoreError } from "../core/errors.js";
import type { AsyncSessionStore, RecordChanges, StoredRecord, SubjectSession } from "../core/store.js";
import { describe } from "./internal/describe.js";
import { startGCTimer, validateGCInterval } from "./internal/gc-timer.js";
import type { TableName } from "./internal/sql-common.js";
import { checkConnection, checkCreateTable, closeOnce, jsonColumn, messageOf, onceUntilSuccess, parseTable, withDeadline } from "./internal/sql-common.js";
import { checkStoreArguments } from "./internal/option-keys.js";
import { checkTimeout } from "./internal/timeout.js";

/** How {@link postgresStore} reaches the database: the app's pool, or a URL for a pool of its own. */
export type PostgresStoreConnection =
	| {
			/** A `pg.Pool` the app owns (TLS, sizing, `error` listener). The store never ends it. */
			pool: Pool;
			url?: undefined;
	  }
	| {
			/** A connection URL (`postgres://user@host:5432/db`). The store creates a pool and ends it in `close()`. */
			url: string;
			pool?: undefined;
	  };

/** Options of {@link postgresStore}. */
export interface PostgresStoreOptions {
	/**
	 * The table, optionally schema-qualified (`"app.sessions"`). Each part is a plain identifier
	 * (`/^[A-Za-z_][A-Za-z0-9_]*$/`, table at most 48 characters); it is always double-quoted in
	 * SQL, so it is case-sensitive. Anything else throws `SessionConfigError` at construction.
	 * @default "sessions"
	 */
	table?: string;
	/**
	 * Create the table and its indexes on first use, unless they exist already (once, under an
	 * advisory lock, so several processes starting together are safe). Creating needs the CREATE
	 * privilege on the schema; a table that exists with both indexes is used as it is, so a role
	 * that may only read and write its rows works too. Set `false` to skip the check as well.
	 * @default true
	 */
	createTable?: boolean;
	/** Seconds between deletions of expired rows; 0 turns the timer off (`gc()` still works). @default 300 (5 minutes) */
	gcInterval?: number;
	/**
	 * Seconds each call may take, waiting for a pool connection included, before it rejects with
	 * `SessionStoreError`. A pool created from `url` also gets it as its connect timeout, and has
	 * the server cancel each statement before the call's time is up (`statement_timeout` of 90% of
	 * it, less the time the call already waited), so a call that timed out was not applied, as
	 * long as a round trip to the server takes under 5% of `timeout` (see `setStatementTimeout`).
	 * With `pool`, see the docs.
	 * @default 5
	 */
	timeout?: number;
	/**
	 * With `url`: set `statement_timeout` on the store's connections (see `timeout`), as a startup
	 * parameter of each connection, and by `SET` on one whose call waited for it. Set `false`
	 * behind PgBouncer, which refuses that startup parameter ("unsupported startup parameter:
	 * statement_timeout") and, in transaction mode, would hand a `SET` on to other clients: the
	 * store then sends neither, and a call that timed out may still be applied afterwards, unless
	 * the server has a limit of its own (`ALTER ROLE app SET statement_timeout = '4500ms'`, which
	 * works through PgBouncer). Not an option with `pool`, which keeps the app's own settings.
	 * @default true
	 */
	setStatementTimeout?: boolean;
	/**
	 * Run each statement as a named prepared statement: PostgreSQL parses and plans it once per
	 * connection instead of on every call (a load plus a write took about 30% less time here). Set
	 * `false` behind a pooler that cannot keep prepared statements per client, such as PgBouncer
	 * before 1.21 in transaction mode (from 1.21, set its `max_prepared_statements`).
	 * @default true
	 */
	prepare?: boolean;
}

type Capabilities = "merge" | "listBySubject" | "deleteBySubject" | "count" | "gc" | "close";

/** The PostgreSQL store: every optional capability of {@link AsyncSessionStore} is present. */
export interface PostgresStore extends Omit<AsyncSessionStore, Capabilities>, Required<Pick<AsyncSessionStore, Capabilities>> {
	/** The table the store uses, as given (`"sessions"`, `"app.sessions"`). */
	readonly table: string;
}

const STORE = "postgres";
const CONNECTION_KEYS = ["pool", "url"];
const OPTION_KEYS = ["table", "createTable", "gcInterval", "timeout", "prepare", "setStatementTimeout"];
const GC_BATCH = 1000;
// What the contract calls a JSON number; anything else counts as 0 when incremented. The
// exponent (leading zeros aside) has at most 4 digits and the text at most MAX_NUMBER_TEXT
// characters, so its numeric cast never overflows numeric's range ("1e200000" would fail the
// merge); past either bound a number is 0 or Infinity to JavaScript (but for freaks such as a
// 6000-digit fraction), and counts as 0 as it does there.
const JSON_NUMBER = "^-?(0|[1-9][0-9]*)([.][0-9]+)?([eE][+-]?0*[0-9]{1,4})?$";
const MAX_NUMBER_TEXT = 6000;
// Increments add float8s, as JavaScript adds numbers (so 0.2 + 0.1 gives what applyChanges
// gives, not numeric's exact 0.3). From this number on (2^1024 - 2^970, halfway past the largest
// double, where a tie rounds to even) JavaScript reads Infinity, so it counts as 0 instead of
// failing float8's cast. Exact, as numeric: a 30-digit bound missed the numbers just below it.
const FLOAT8_OVERFLOW = (2n ** 1024n - 2n ** 970n).toString();
// 2^-1075, half the smallest double. Up to it JavaScript reads a number as 0, and float8's cast
// refuses it ("1e-400" is out of range) instead of rounding to 0: it counts as 0 too. Exact, as
// FLOAT8_OVERFLOW: above it, the cast gives the smallest double, as JavaScript does.
const FLOAT8_UNDERFLOW = `${5n ** 1075n}e-1075`;
// 2^1023. float8's + refuses a sum past the largest double, where JavaScript gives ±Infinity:
// halved (exactly, for numbers of at least 1) the sum rounds to this or more just when it overflows.
const FLOAT8_HALF_OVERFLOW = "8.98846567431157953864652595394512366e307";

function quoted(table: TableName): string {
	return table.schema === null ? `"${table.name}"` : `"${table.schema}"."${table.name}"`;
}

/**
 * The DDL the store runs on first use (every statement is `IF NOT EXISTS`), for apps that
 * create their schema in migrations. Throws `SessionConfigError` if `table` is not a valid name
 * (see {@link PostgresStoreOptions.table}).
 *
 * Times are `bigint` epoch milliseconds: the contract's unit, compared with the app's clock
 * (the one that set them), so the app and database clocks can never disagree about expiry.
 *
 * @example
 * await pool.query(postgresSchema("sessions"));
 */
export function postgresSchema(table = "sessions"): string {
	return schema(parseTable(table));
}

function schema(table: TableName): string {
	const t = quoted(table);
	return [
		`CREATE TABLE IF NOT EXISTS ${t} (`,
		"  key text PRIMARY KEY,",
		"  data jsonb NOT NULL,",
		"  flash jsonb NOT NULL,",
		"  subject text,",
		"  created_at bigint NOT NULL,",
		"  idle_expires_at bigint NOT NULL,",
		"  absolute_expires_at bigint NOT NULL,",
		"  expires_at bigint NOT NULL",
		");",
		`CREATE INDEX IF NOT EXISTS "${table.name}_expires_at_idx" ON ${t} (expires_at);`,
		`CREATE INDEX IF NOT EXISTS "${table.name}_subject_idx" ON ${t} (subject) WHERE subject IS NOT NULL;`,
	].join("\n");
}

interface Row extends QueryResultRow {
	data: unknown;
	flash: unknown;
	subject: string | null;
	created_at: string | number;
	idle_expires_at: string | number;
	absolute_expires_at: string | number;
}

interface SubjectRow extends QueryResultRow {
	key: string;
	created_at: string | number;
	idle_expires_at: string | number;
	absolute_expires_at: string | number;
}

// pg returns bigint as a string by default; epoch ms fit a double exactly.
function fromRow(row: Row): StoredRecord {
	return {
		data: jsonColumn(row.data),
		flash: jsonColumn(row.flash),
		subject: row.subject,
		createdAt: Number(row.created_at),
		idleExpiresAt: Number(row.idle_expires_at),
		absoluteExpiresAt: Number(row.absolute_expires_at),
	};
}

function recordValues(record: StoredRecord, expiresAt: number): unknown[] {
	return [JSON.stringify(record.data), JSON.stringify(record.flash), record.subject, record.createdAt, record.idleExpiresAt, record.absoluteExpiresAt, expiresAt];
}

function statements(table: TableName) {
	const t = quoted(table);
	const columns = "data, flash, subject, created_at, idle_expires_at, absolute_expires_at";
	return {
		// An advisory lock serialises first use across processes: two concurrent CREATE TABLE IF
		// NOT EXISTS can both pass the check and one then fails on the catalog's unique index.
		// Several statements in one simple query run as one transaction, which holds the lock.
		create: `SELECT pg_advisory_xact_lock(hashtext('sessionkit:${t}'));\n${schema(table)}`,
		// Whether the DDL would change nothing: CREATE INDEX IF NOT EXISTS checks that the role
		// owns the table before it checks whether the index exists, so a role that may only
		// read and write rows must not run it. The indexes are looked for in the table's schema.
		exists: `SELECT count(*)::int AS n FROM pg_class AS t JOIN pg_class AS i ON i.relnamespace = t.relnamespace
			WHERE t.oid = to_regclass('${t}') AND i.relname IN ('${table.name}_expires_at_idx', '${table.name}_subject_idx')`,
		get: `SELECT ${columns} FROM ${t} WHERE key = $1 AND expires_at > $2`,
		set: `INSERT INTO ${t} (key, ${columns}, expires_at) VALUES ($1, $2::jsonb, $3::jsonb, $4, $5, $6, $7, $8)
			ON CONFLICT (key) DO UPDATE SET data = EXCLUDED.data, flash = EXCLUDED.flash, subject = EXCLUDED.subject, created_at = EXCLUDED.created_at,
			idle_expires_at = EXCLUDED.idle_expires_at, absolute_expires_at = EXCLUDED.absolute_expires_at, expires_at = EXCLUDED.expires_at`,
		replace: `UPDATE ${t} SET data = $2::jsonb, flash = $3::jsonb, subject = $4, created_at = $5, idle_expires_at = $6, absolute_expires_at = $7, expires_at = $8
			WHERE key = $1 AND expires_at > $9`,
		delete: `DELETE FROM ${t} WHERE key = $1`,
		touch: `UPDATE ${t} SET idle_expires_at = $2, expires_at = $3 WHERE key = $1 AND expires_at > $4`,
		listBySubject: `SELECT key, created_at, idle_expires_at, absolute_expires_at FROM ${t} WHERE subject = $1 AND expires_at > $2 ORDER BY created_at`,
		// Expired rows of the subject are left to gc, so the count is of live sessions only.
		deleteBySubject: `DELETE FROM ${t} WHERE subject = $1 AND expires_at > $2`,
		count: `SELECT count(*) AS n FROM ${t} WHERE expires_at > $1`,
		// In batches, so a large backlog never holds thousands of row locks or outlives the
		// timeout; SKIP LOCKED lets the gc of several app instances run side by side.
		gc: `DELETE FROM ${t} WHERE key IN (SELECT key FROM ${t} WHERE expires_at <= $1 LIMIT ${GC_BATCH} FOR UPDATE SKIP LOCKED)`,
	};
}

// Which parts of a merge's changes are present: each shape gets its own UPDATE, which
// touches only the columns and jsonb operations it needs (an increment alone costs about as
// much as a plain UPDATE of the times).
const CLEAR = 1;
const DELETE = 2;
const SET = 4;
const INCREMENT = 8;
const FLASH_DELETE = 16;
const FLASH_SET = 32;
const SUBJECT = 64;
// More than MANY_NAMES names to delete, which get a statement of their own (see withoutMany).
const DELETE_MANY = 128;
const FLASH_DELETE_MANY = 256;
const MANY_NAMES = 256;

function mergeShape(changes: RecordChanges): number {
	return (
		(changes.clear ? CLEAR : 0) |
		deleteShape(changes.delete, DELETE, DELETE_MANY) |
		(hasKeys(changes.set) ? SET : 0) |
		(hasKeys(changes.increment) ? INCREMENT : 0) |
		deleteShape(changes.flashDelete, FLASH_DELETE, FLASH_DELETE_MANY) |
		(hasKeys(changes.flashSet) ? FLASH_SET : 0) |
		(changes.subject !== undefined ? SUBJECT : 0)
	);
}

function deleteShape(names: readonly string[], few: number, many: number): number {
	return names.length > MANY_NAMES ? many : names.length > 0 ? few : 0;
}

function hasKeys(object: object): boolean {
	for (const _ in object) return true;
	return false;
}

/** The values of {@link mergeStatement}'s parameters for `shape`, in its order. */
function mergeValues(key: string, now: number, shape: number, changes: RecordChanges, expiresAt: number): unknown[] {
	const values: unknown[] = [key, now];
	if (shape & (DELETE | DELETE_MANY)) values.push(changes.delete);
	if (shape & SET) values.push(JSON.stringify(changes.set));
	if (shape & INCREMENT) values.push(JSON.stringify(changes.increment));
	if (shape & (FLASH_DELETE | FLASH_DELETE_MANY)) values.push(changes.flashDelete);
	if (shape & FLASH_SET) values.push(JSON.stringify(changes.flashSet));
	if (shape & SUBJECT) values.push(changes.subject);
	values.push(changes.idleExpiresAt, expiresAt);
	return values;
}

/**
 * One UPDATE, so the row lock makes parallel merges queue, and each one re-reads the row a
 * previous one committed (READ COMMITTED re-evaluates SET on the latest row version). The data
 * is built in the contract's order: clear, delete, set, then increments, each read from that
 * intermediate value and written back as a JSON number in a string.
 */
function mergeStatement(t: string, shape: number): string {
	let parameter = 2; // $1 key, $2 now
	const next = (): string => `$${++parameter}`;
	const columns: string[] = [];
	if (shape & (CLEAR | DELETE | DELETE_MANY | SET | INCREMENT)) {
		let base = shape & CLEAR ? "'{}'::jsonb" : "s.data";
		if (shape & DELETE) base = `(${base} - ${next()}::text[])`;
		if (shape & DELETE_MANY) base = withoutMany(base, `${next()}::text[]`);
		if (shape & SET) base = `(${base} || ${next()}::jsonb)`;
		if (shape & INCREMENT) base = withIncrements(base, next());
		columns.push(`data = ${base}`);
	}
	if (shape & (FLASH_DELETE | FLASH_DELETE_MANY | FLASH_SET)) {
		let flash = "s.flash";
		if (shape & FLASH_DELETE) flash = `(${flash} - ${next()}::text[])`;
		if (shape & FLASH_DELETE_MANY) flash = withoutMany(flash, `${next()}::text[]`);
		if (shape & FLASH_SET) flash = `(${flash} || ${next()}::jsonb)`;
		columns.push(`flash = ${flash}`);
	}
	if (shape & SUBJECT) columns.push(`subject = ${next()}::text`);
	columns.push(`idle_expires_at = ${next()}`, `expires_at = ${next()}`);
	return `UPDATE ${t} AS s SET ${columns.join(", ")} WHERE s.key = $1 AND s.expires_at > $2`;
}

/**
 * SQL: `object` without the keys of the text[] `names`, in time linear in both, for more than
 * MANY_NAMES names. jsonb's `-` compares each key with every name: the fastest for a few names,
 * but it took 54 ms to delete 4000 keys of 4000 (150 ms for 4000 absent names), where this hash
 * anti-join of the entries took 6 ms (13 ms). It rebuilds the object, though: 12 ms to delete
 * 1 of 4000 keys (`-`: under 1 ms), and a CASE between the two slowed a plain flash read by a
 * third (a generic plan sets up both), so each has a statement of its own.
 */
function withoutMany(object: string, names: string): string {
	return `(SELECT COALESCE(jsonb_object_agg(e.key, e.value), '{}'::jsonb) FROM jsonb_each(${object}) AS e
		WHERE NOT EXISTS (SELECT FROM unnest(${names}) AS d (name) WHERE d.name = e.key))`;
}

/**
 * `data` (the object after clear, delete and set) with the increments of the jsonb parameter
 * `increments` added, in time linear in the keys. OFFSET 0 keeps the planner from copying a
 * subquery's expression into each use of its column, which built `data` again for every key,
 * several times (1000 keys deleted, set and incremented took 18 s). So `data` is built once,
 * and `|| '{}'` detoasts a stored one once, where each `->>` of a compressed value would
 * decompress all of it. Each number is read (n) and added (p) once per key, in nested
 * subqueries: one lateral join fewer is faster.
 */
function withIncrements(data: string, increments: string): string {
	return `(SELECT b.data || COALESCE((
			SELECT jsonb_object_agg(i.key, to_jsonb(${javaScriptText("p.sum")}))
			FROM jsonb_each_text(${increments}::jsonb) AS i (key, amount),
			LATERAL (SELECT b.data ->> i.key AS old) AS o,
			LATERAL (SELECT (${float8Sum("n.x", "n.y")})::text AS sum
				FROM (SELECT ${float8OrZero("o.old")} AS x, i.amount::float8 AS y OFFSET 0) AS n OFFSET 0) AS p
		), '{}'::jsonb) FROM (SELECT ${data} || '{}'::jsonb AS data OFFSET 0) AS b)`;
}

/**
 * SQL: the text `text` (null for a missing key) as the float8 JavaScript's Number() reads, if
 * it is a JSON number; 0 if it is not, or if JavaScript reads Infinity (or rounds it to 0,
 * which float8's cast would refuse). Nested CASE: only CASE fixes the order of evaluation, and
 * the casts must see only what the regular expression let through.
 */
function float8OrZero(text: string): string {
	return `CASE WHEN ${text} ~ '${JSON_NUMBER}' AND length(${text}) <= ${MAX_NUMBER_TEXT} THEN
			CASE WHEN abs(${text}::numeric) > ${FLOAT8_UNDERFLOW} AND abs(${text}::numeric) < ${FLOAT8_OVERFLOW} THEN ${text}::float8 ELSE 0 END
		ELSE 0 END`;
}

/**
 * SQL: the float8 sum of `x` and `y`, ±Infinity past the largest double where float8's + fails.
 * A number below 1 cannot make the sum overflow, and halving it could underflow (an error too):
 * CASE, not OR, as only CASE fixes the order of evaluation.
 */
function float8Sum(x: string, y: string): string {
	return `CASE WHEN least(abs(${x}), abs(${y})) < 1 THEN ${x} + ${y}
		WHEN abs(${x} / 2 + ${y} / 2) < ${FLOAT8_HALF_OVERFLOW}::float8 THEN ${x} + ${y}
		ELSE sign(${x}) * 'Infinity'::float8 END`;
}

/**
 * SQL: the float8 text `text` laid out as JavaScript's String() lays out the number. Both give
 * the shortest digits that read back the same (float8 from PostgreSQL 12, with
 * extra_float_digits at its default), but float8 writes an exponent from 1e15 and below 1e-4,
 * with two digits at least ("1e-07"), where JavaScript does from 1e21 and below 1e-6 ("1e-7").
 * Between 1e16 and 1e21 float8's digits are not always the shortest: a 17th digit may stand
 * where String() writes 0 (the same number; see docs/stores/postgres.md).
 */
function javaScriptText(text: string): string {
	return `CASE WHEN strpos(${text}, 'e') = 0 THEN ${text}
		WHEN split_part(${text}, 'e', 2)::int BETWEEN -6 AND 20 THEN ${text}::numeric::text
		ELSE replace(${text}, 'e-0', 'e-') END`;
}

/** SQLSTATE 40001 (serialization_failure) or 40P01 (deadlock_detected): the statement was rolled back. */
function isSerializationFailure(error: unknown): boolean {
	const code = (error as { code?: unknown } | null)?.code;
	return code === "40001" || code === "40P01";
}

type Statements = ReturnType<typeof statements>;
/** Every statement but the first-use ones (several statements in one text cannot be prepared). */
type Operation = Exclude<keyof Statements, "create" | "exists">;

/**
 * A prepared statement's name. pg keeps one statement per name on each connection, and refuses
 * a name reused for other text: the hash of the text keeps stores of two tables on one pool
 * (and the merge shapes) apart.
 */
function statementName(operation: string, text: string): string {
	return `sessionkit_${operation}_${createHash("sha256").update(text).digest("hex").slice(0, 16)}`;
}

/** `setStatementTimeout ?? true`, checked: a boolean, and only with `url`. */
function checkSetStatementTimeout(value: unknown, kind: "pool" | "url"): boolean {
	if (value === undefined) return kind === "url";
	if (typeof value !== "boolean") throw new SessionConfigError("setStatementTimeout", `must be true or false, got ${describe(value)}.`);
	if (kind === "pool") {
		throw new SessionConfigError("setStatementTimeout", "applies only with url: the store leaves the statement_timeout of the app's pool as the app set it.");
	}
	return value;
}

async function createPool(url: string, timeoutMs: number, statementTimeoutMs: number | undefined): Promise<Pool> {
	let pg: typeof import("pg");
	try {
		pg = await import("pg");
	} catch (error) {
		throw new SessionConfigError(
			"url",
			`needs the "pg" package to connect, and it could not be loaded. Install it (npm install pg), or pass { pool }.`,
			{ cause: error },
		);
	}
	const pool = new pg.Pool({
		connectionString: url,
		connectionTimeoutMillis: timeoutMs,
		query_timeout: timeoutMs,
		// A startup parameter: PgBouncer refuses the connection for it (see setStatementTimeout).
		...(statementTimeoutMs === undefined ? {} : { statement_timeout: statementTimeoutMs }),
		// Like the gc timer, the store's own idle connections never keep the process alive.
		allowExitOnIdle: true,
	});
	// An idle connection the server dropped (restart, pg_terminate_backend) is emitted here, and
	// an unheard 'error' would crash the process. The pool has already discarded that client, and
	// the next call opens a new one, so there is nothing else to do.
	pool.on("error", () => undefined);
	return pool;
}

/**
 * Sessions in a PostgreSQL table through `pg`: shared by every app instance, with atomic
 * `merge` (one `UPDATE` with jsonb operators, so parallel requests never lose each other's
 * changes), an indexed subject for "log out everywhere", and batched gc of expired rows.
 *
 * Pass `{ pool }` to use the app's `pg.Pool` (the store never ends it; give it an `error`
 * listener, as pg requires of every pool), or `{ url }` to have the store create a pool and end
 * it in `close()`. With `url`, pg is loaded on first use, and a missing package makes that first
 * call reject with `SessionConfigError`; importing this module loads no driver.
 *
 * A row past its `expires_at` is never returned, even before gc deletes it. Every call rejects
 * with `SessionStoreError` (the driver's error as `cause`) on a database failure, or when it
 * takes longer than `timeout`.
 *
 * Throws `SessionConfigError` at construction for a bad `table`, `createTable`, `gcInterval`,
 * `timeout`, `prepare` or `setStatementTimeout`, an option it does not know (in either argument),
 * or unless exactly one of `pool` and `url` is given.
 *
 * @example
 * import pg from "pg";
 * const pool = new pg.Pool({ connectionString: process.env.DATABASE_URL });
 * pool.on("error", (error) => console.error(error));
 * const sessions = createSessions({ store: postgresStore({ pool }) });
 */
export function postgresStore(connection: PostgresStoreConnection, options: PostgresStoreOptions = {}): PostgresStore {
	checkStoreArguments("postgresStore", connection, CONNECTION_KEYS, options, OPTION_KEYS);
	const kind = checkConnection(connection, "pg");
	const tableOption = options.table ?? "sessions";
	const table = parseTable(tableOption);
	const createTable = checkCreateTable(options.createTable);
	const prepare = options.prepare ?? true;
	if (typeof prepare !== "boolean") throw new SessionConfigError("prepare", `must be true or false, got ${describe(prepare)}.`);
	const gcInterval = validateGCInterval(options.gcInterval, 300);
	const timeout = checkTimeout(options.timeout, 5);
	const timeoutMs = Math.ceil(timeout * 1000);
	// Whether the server cancels the store's statements in time: only on the store's own pool.
	const serverCancels = checkSetStatementTimeout(options.setStatementTimeout, kind);
	// The server's statement_timeout starts when the statement arrives, the call's deadline when
	// the call is made. On its own pool the store keeps the first within the second: each
	// statement gets 90% of the timeout less the time the call spent before sending it (pool
	// wait, connecting, creating the table). The other 10% is for the answer to come back.
	const statementTimeoutMs = Math.max(1, Math.floor(timeoutMs * 0.9));
	// A call that waited no longer than this sends its statement at once, under the pool's
	// statement_timeout: it still ends 5% before the deadline. Saves a SET on every call.
	const waitAllowanceMs = (timeoutMs - statementTimeoutMs) / 2;
	const sql = statements(table);
	// Each statement's text (fixed, or one per merge shape) → its prepared statement's name.
	const names = new Map<string, string>();

	let owned: Promise<Pool> | undefined;
	let closed = false;
	const connect: () => Promise<Pool> =
		kind === "pool"
			? () => Promise.resolve(connection.pool!)
			: onceUntilSuccess(() => (owned = createPool(connection.url!, timeoutMs, serverCancels ? statementTimeoutMs : undefined)));
	const ensureTable = onceUntilSuccess(async () => {
		const pool = await connect();
		const { rows } = await pool.query<{ n: number }>(withQueryTimeout(sql.exists, undefined));
		if (rows[0]?.n === 2) return;
		try {
			await pool.query(withQueryTimeout(sql.create, undefined));
		} catch (error) {
			if ((error as { code?: unknown }).code !== "42501") throw error;
			throw new SessionStoreError(
				STORE,
				`cannot create table ${quoted(table)} or its indexes: ${messageOf(error)}. Creating the table needs the CREATE privilege on its schema, and adding a missing index needs the table's owner: run postgresSchema() as the owner (in a migration); see docs/stores/postgres.md.`,
				{ cause: error },
			);
		}
	});

	// pg's per-query read timeout: the client is discarded when it fires, never reused mid-query.
	function withQueryTimeout(text: string, values: unknown[] | undefined, name?: string): QueryConfig {
		const config: QueryConfig & { query_timeout: number } = { text, values, query_timeout: timeoutMs, name };
		return config;
	}

	function explain(error: unknown): string {
		const code = (error as { code?: unknown }).code;
		if (code === "42P01") {
			return `table ${quoted(table)} does not exist. Create it with postgresSchema() (in a migration), or set createTable: true so the store creates it on its first call; see docs/stores/postgres.md.`;
		}
		// 57014 is also pg_cancel_backend(); only the store's own pool sets statement_timeout.
		if (code === "57014" && serverCancels && /statement timeout/.test(messageOf(error))) {
			return `the server cancelled it before the ${timeout} s timeout, so it was not applied. Is the row locked by a long transaction?`;
		}
		if (serverCancels && /unsupported startup parameter: statement_timeout/.test(messageOf(error))) {
			return `${messageOf(error)}. A pooler (PgBouncer) refuses the statement_timeout the store sets on its connections: set the option setStatementTimeout: false (and prepare: false before PgBouncer 1.21 in transaction mode); see docs/stores/postgres.md.`;
		}
		return messageOf(error);
	}

	function query<R extends QueryResultRow>(operation: Operation, values: unknown[]): Promise<QueryResult<R>> {
		return send<R>(operation, sql[operation], values);
	}

	function nameOf(operation: string, text: string): string | undefined {
		if (!prepare) return undefined;
		let name = names.get(text);
		if (name === undefined) names.set(text, (name = statementName(operation, text)));
		return name;
	}

	function send<R extends QueryResultRow>(operation: string, text: string, values: unknown[]): Promise<QueryResult<R>> {
		if (closed) return Promise.reject(new SessionStoreError(STORE, `${operation} called after close().`));
		const name = nameOf(operation, text);
		const started = performance.now();
		return withDeadline(
			STORE,
			operation,
			timeout,
			async (signal) => {
				const pool = await connect();
				if (createTable) await ensureTable();
				const client = await pool.connect();
				return sendInTime<R>(operation, client, withQueryTimeout(text, values, name), started, signal);
			},
			explain,
		);
	}

	/**
	 * Runs `config` on `client`, then releases it. pg would send a statement whenever a connection
	 * frees up, however late: one the caller was already told has failed is not sent at all.
	 */
	async function sendInTime<R extends QueryResultRow>(
		operation: string,
		client: PoolClient,
		config: QueryConfig,
		started: number,
		signal: AbortSignal,
	): Promise<QueryResult<R>> {
		const waitedMs = performance.now() - started;
		// On the store's own pool, a call that waited longer than the allowance first lowers the
		// connection's limit to what is left. The app's pool has the statement_timeout the app
		// gave it, which the store could not put back.
		const limitMs = !serverCancels || waitedMs <= waitAllowanceMs ? undefined : Math.floor(statementTimeoutMs - waitedMs);
		if (signal.aborted || (limitMs !== undefined && limitMs < 1)) {
			client.release();
			throw new SessionStoreError(
				STORE,
				`${operation} timed out after ${timeout} s, before it was sent: waiting for a pool connection left no time for it. Is the pool large enough, and is no row locked by a long transaction?`,
			);
		}
		// A connection that fails while checked out emits 'error', fatal with no listener; the
		// query rejects with the same error (pool.query listens the same way).
		const ignore = (): undefined => undefined;
		client.on("error", ignore);
		const release = (error?: Error): void => {
			client.off("error", ignore);
			client.release(error);
		};
		const lower = (ms: number): Promise<unknown> => client.query(withQueryTimeout(`SET statement_timeout = ${ms}`, undefined));
		let lowered = limitMs !== undefined;
		try {
			// One more round trip, paid only by a call that waited (a full pool, a new connection).
			if (limitMs !== undefined) await lower(limitMs);
			let result: QueryResult<R>;
			for (;;) {
				try {
					result = await client.query<R>(config);
					break;
				} catch (error) {
					// Under REPEATABLE READ or SERIALIZABLE (a pool whose default_transaction_isolation
					// is one), a statement that meets a parallel update of its row fails, applying
					// nothing: parallel merges of one session failed as often as not. Each statement is
					// its own transaction, so it is sent again while the call has time; on the store's
					// own pool, with the limit lowered to what is left, as above.
					if (!isSerializationFailure(error) || signal.aborted) throw error;
					if (serverCancels) {
						const leftMs = Math.floor(statementTimeoutMs - (performance.now() - started));
						if (leftMs < 1) throw error;
						await lower(leftMs);
						lowered = true;
					}
				}
			}
			if (!lowered) release();
			// Back to the pool's limit before the connection serves another call; this one need not wait.
			else lower(statementTimeoutMs).then(() => release(), release);
			return result;
		} catch (error) {
			// An error discards the connection, as pool.query does (and with it a lowered limit).
			release(error as Error);
			throw error;
		}
	}

	const merges = new Map<number, string>();
	function mergeText(shape: number): string {
		let text = merges.get(shape);
		if (text === undefined) merges.set(shape, (text = mergeStatement(quoted(table), shape)));
		return text;
	}

	const store: PostgresStore = {
		name: STORE,
		table: tableOption,
		async get(key) {
			const { rows } = await query<Row>("get", [key, Date.now()]);
			return rows[0] ? fromRow(rows[0]) : null;
		},
		async set(key, record, expiresAt) {
			await query("set", [key, ...recordValues(record, expiresAt)]);
		},
		async replace(key, record, expiresAt) {
			const { rowCount } = await query("replace", [key, ...recordValues(record, expiresAt), Date.now()]);
			return rowCount === 1;
		},
		async merge(key: string, changes: RecordChanges, expiresAt: number) {
			const shape = mergeShape(changes);
			const { rowCount } = await send("merge", mergeText(shape), mergeValues(key, Date.now(), shape, changes, expiresAt));
			return rowCount === 1;
		},
		async delete(key) {
			await query("delete", [key]);
		},
		async touch(key, idleExpiresAt, expiresAt) {
			await query("touch", [key, idleExpiresAt, expiresAt, Date.now()]);
		},
		async listBySubject(subject) {
			const { rows } = await query<SubjectRow>("listBySubject", [subject, Date.now()]);
			return rows.map(
				(row): SubjectSession => ({
					key: row.key,
					createdAt: Number(row.created_at),
					idleExpiresAt: Number(row.idle_expires_at),
					absoluteExpiresAt: Number(row.absolute_expires_at),
				}),
			);
		},
		async deleteBySubject(subject) {
			const { rowCount } = await query("deleteBySubject", [subject, Date.now()]);
			return rowCount ?? 0;
		},
		async count() {
			const { rows } = await query<{ n: string }>("count", [Date.now()]);
			return Number(rows[0]?.n ?? 0);
		},
		async gc() {
			let deleted = 0;
			for (;;) {
				const { rowCount } = await query("gc", [Date.now()]);
				deleted += rowCount ?? 0;
				if ((rowCount ?? 0) < GC_BATCH) return deleted;
			}
		},
		close: closeOnce(
			() => stopGC(),
			() => (closed = true),
			async () => {
				const pool = await owned?.catch(() => undefined);
				await pool?.end();
			},
		),
	};
	const stopGC = startGCTimer(gcInterval, () => store.gc());
	return store;
}
