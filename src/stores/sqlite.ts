import { open as openFile } from "node:fs/promises";
import type BetterSqlite3 from "better-sqlite3";
import { SessionConfigError, SessionError, SessionStoreError } from "../core/errors.js";
import type { AsyncSessionStore, RecordChanges, StoredRecord, SubjectSession } from "../core/store.js";
import { applyChanges } from "../core/store.js";
import { describe } from "./internal/describe.js";
import { startGCTimer, validateGCInterval } from "./internal/gc-timer.js";
import { checkClock } from "./internal/clock.js";
import { checkOptionKeys } from "./internal/option-keys.js";

/** A better-sqlite3 database handle (`new Database(path)`). */
export type SQLiteDatabase = BetterSqlite3.Database;

/** Options of {@link sqliteStore} shared by both ways of giving it a database. */
export interface SQLiteStoreBaseOptions {
	/**
	 * The table name, a plain SQL identifier (`/^[A-Za-z_][A-Za-z0-9_]{0,62}$/`) not starting with
	 * `sqlite_` (SQLite reserves those); anything else throws `SessionConfigError` at construction.
	 * Its indexes are named `<table>_expires_at` and `<table>_subject`. SQLite ignores case in
	 * table names (`Sessions` is `sessions`): a name that matches an existing table in all but
	 * case makes the first call reject with `SessionConfigError`, so two stores never share a
	 * table unknowingly.
	 * @default "sessions"
	 */
	table?: string;
	/** Seconds between deletions of expired rows; 0 turns the timer off (`gc()` still works). @default 300 (5 minutes) */
	gcInterval?: number;
	/** The time source, epoch ms. Expiry is checked against it on every read. @default Date.now */
	clock?: () => number;
}

/** Options of {@link sqliteStore}: the app's own database, or a path for the store to open. */
export type SQLiteStoreOptions = SQLiteStoreBaseOptions &
	(
		| {
				/** A database the app already has open. The store never closes it. */
				database: SQLiteDatabase;
				path?: undefined;
		  }
		| {
				/** A database file for the store to open (in WAL mode) and to close in `close()`; created with mode 0600 if missing. */
				path: string;
				database?: undefined;
		  }
	);

type Capabilities = "merge" | "listBySubject" | "deleteBySubject" | "count" | "gc" | "close";

/** The SQLite store: every optional capability of {@link AsyncSessionStore} is present. */
export interface SQLiteStore extends Omit<AsyncSessionStore, Capabilities>, Required<Pick<AsyncSessionStore, Capabilities>> {
	/** The table the store uses. */
	readonly table: string;
}

const STORE = "sqlite";
const IDENTIFIER = /^[A-Za-z_][A-Za-z0-9_]{0,62}$/;

// SQLite refuses to create a table so named ("reserved for internal use"): every call would fail.
const RESERVED = /^sqlite_/i;

function checkTable(table: unknown): string {
	if (typeof table !== "string" || !IDENTIFIER.test(table) || RESERVED.test(table)) {
		throw new SessionConfigError(
			"table",
			`must be a plain SQL identifier (a letter or _, then up to 62 letters, digits or _) not starting with "sqlite_", got ${describe(table)}.`,
		);
	}
	return table;
}

/**
 * The DDL the store runs on first use (every statement is `IF NOT EXISTS`), for apps that
 * create their schema in migrations. Throws `SessionConfigError` if `table` is not a plain identifier.
 *
 * @example
 * db.exec(sqliteSchema("sessions"));
 */
export function sqliteSchema(table = "sessions"): string {
	const t = checkTable(table);
	return [
		`CREATE TABLE IF NOT EXISTS "${t}" (`,
		"  key TEXT PRIMARY KEY NOT NULL,",
		"  data TEXT NOT NULL,",
		"  subject TEXT,",
		"  created_at INTEGER NOT NULL,",
		"  idle_expires_at INTEGER NOT NULL,",
		"  absolute_expires_at INTEGER NOT NULL,",
		"  expires_at INTEGER NOT NULL",
		");",
		`CREATE INDEX IF NOT EXISTS "${t}_expires_at" ON "${t}" (expires_at);`,
		`CREATE INDEX IF NOT EXISTS "${t}_subject" ON "${t}" (subject) WHERE subject IS NOT NULL;`,
	].join("\n");
}

interface Row {
	data: string;
	subject: string | null;
	created_at: number;
	idle_expires_at: number;
	absolute_expires_at: number;
}

interface RowWrite {
	key: string;
	data: string;
	subject: string | null;
	created_at: number;
	idle_expires_at: number;
	absolute_expires_at: number;
	expires_at: number;
}

interface SubjectRow {
	key: string;
	created_at: number;
	idle_expires_at: number;
	absolute_expires_at: number;
}

type Statement<Params extends unknown[] | object, Result = unknown> = BetterSqlite3.Statement<Params extends unknown[] ? Params : [Params], Result>;

interface Statements {
	get: Statement<[string, number], Row>;
	upsert: Statement<RowWrite>;
	replace: Statement<RowWrite & { now: number }>;
	delete: Statement<[string]>;
	touch: Statement<[number, number, string, number]>;
	listBySubject: Statement<[string, number], SubjectRow>;
	deleteBySubject: Statement<[string, number]>;
	count: Statement<[number], number>;
	gc: Statement<[number]>;
	merge(key: string, changes: RecordChanges, expiresAt: number, now: number): boolean;
}

function toRow(key: string, record: StoredRecord, expiresAt: number): RowWrite {
	return {
		key,
		data: JSON.stringify({ data: record.data, flash: record.flash }),
		subject: record.subject,
		created_at: record.createdAt,
		idle_expires_at: record.idleExpiresAt,
		absolute_expires_at: record.absoluteExpiresAt,
		expires_at: expiresAt,
	};
}

function fromRow(row: Row): StoredRecord {
	const { data, flash } = JSON.parse(row.data) as Pick<StoredRecord, "data" | "flash">;
	return {
		data,
		flash,
		createdAt: row.created_at,
		idleExpiresAt: row.idle_expires_at,
		absoluteExpiresAt: row.absolute_expires_at,
		subject: row.subject,
	};
}

function prepare(db: SQLiteDatabase, table: string): Statements {
	const t = `"${table}"`;
	const columns = "data, subject, created_at, idle_expires_at, absolute_expires_at";
	// An app may have turned on defaultSafeIntegers; epoch ms fit in a double, and the contract wants numbers.
	const get = db.prepare<[string, number], Row>(`SELECT ${columns} FROM ${t} WHERE key = ? AND expires_at > ?`).safeIntegers(false);
	const update = db.prepare<RowWrite>(
		`UPDATE ${t} SET data = @data, subject = @subject, created_at = @created_at, idle_expires_at = @idle_expires_at, absolute_expires_at = @absolute_expires_at, expires_at = @expires_at WHERE key = @key`,
	);
	const merge = db.transaction((key: string, changes: RecordChanges, expiresAt: number, now: number): boolean => {
		const row = get.get(key, now);
		if (!row) return false;
		update.run(toRow(key, applyChanges(fromRow(row), changes), expiresAt));
		return true;
	});
	return {
		get,
		upsert: db.prepare<RowWrite>(
			`INSERT INTO ${t} (key, ${columns}, expires_at) VALUES (@key, @data, @subject, @created_at, @idle_expires_at, @absolute_expires_at, @expires_at)
			ON CONFLICT (key) DO UPDATE SET data = excluded.data, subject = excluded.subject, created_at = excluded.created_at,
			idle_expires_at = excluded.idle_expires_at, absolute_expires_at = excluded.absolute_expires_at, expires_at = excluded.expires_at`,
		),
		replace: db.prepare<RowWrite & { now: number }>(
			`UPDATE ${t} SET data = @data, subject = @subject, created_at = @created_at, idle_expires_at = @idle_expires_at, absolute_expires_at = @absolute_expires_at, expires_at = @expires_at WHERE key = @key AND expires_at > @now`,
		),
		delete: db.prepare<[string]>(`DELETE FROM ${t} WHERE key = ?`),
		touch: db.prepare<[number, number, string, number]>(`UPDATE ${t} SET idle_expires_at = ?, expires_at = ? WHERE key = ? AND expires_at > ?`),
		listBySubject: db
			.prepare<[string, number], SubjectRow>(`SELECT key, created_at, idle_expires_at, absolute_expires_at FROM ${t} WHERE subject = ? AND expires_at > ? ORDER BY created_at`)
			.safeIntegers(false),
		// Expired rows of the subject are left to gc, so the count is of live sessions only.
		deleteBySubject: db.prepare<[string, number]>(`DELETE FROM ${t} WHERE subject = ? AND expires_at > ?`),
		count: db.prepare<[number], number>(`SELECT count(*) FROM ${t} WHERE expires_at > ?`).pluck().safeIntegers(false),
		gc: db.prepare<[number]>(`DELETE FROM ${t} WHERE expires_at <= ?`),
		// IMMEDIATE takes the write lock before the read, so another process cannot write between
		// our read and our write (a DEFERRED one would fail with SQLITE_BUSY_SNAPSHOT in WAL mode).
		merge: (key, changes, expiresAt, now) => merge.immediate(key, changes, expiresAt, now),
	};
}

async function openDatabase(path: string): Promise<SQLiteDatabase> {
	let Database: typeof BetterSqlite3;
	try {
		({ default: Database } = await import("better-sqlite3"));
	} catch (error) {
		throw new SessionConfigError(
			"path",
			`needs the "better-sqlite3" package to open a database, and it could not be loaded. Install it (npm install better-sqlite3), or pass { database }.`,
			{ cause: error },
		);
	}
	// SQLite creates a missing file 0644 (less the umask): every local user could read the
	// sessions, and the -wal and -shm files, which SQLite gives the database file's mode. Create
	// it owner-only first. An existing file keeps its mode. better-sqlite3 trims the name; a
	// "file:" URI (only with SQLITE_USE_URI=1) or ":memory:" is left to SQLite.
	const filename = path.trim();
	if (filename !== ":memory:" && !filename.startsWith("file:")) {
		try {
			await (await openFile(filename, "wx", 0o600)).close();
		} catch {
			// It exists (the common case), or cannot be created: better-sqlite3 then says why below.
		}
	}
	let db: SQLiteDatabase;
	try {
		db = new Database(path);
	} catch (error) {
		throw new SessionStoreError(STORE, `cannot open the database at ${JSON.stringify(path)}: ${messageOf(error)}`, { cause: error });
	}
	try {
		// WAL lets readers run while one connection writes: what many request handlers need.
		db.pragma("journal_mode = WAL");
	} catch (error) {
		db.close();
		throw new SessionStoreError(STORE, `cannot switch ${JSON.stringify(path)} to WAL mode: ${messageOf(error)}`, { cause: error });
	}
	return db;
}

function messageOf(error: unknown): string {
	return error instanceof Error ? error.message : String(error);
}

/**
 * Sessions in a SQLite table through better-sqlite3: durable, shared by every process that
 * opens the same file, with atomic `merge` (a read-modify-write in one `BEGIN IMMEDIATE`
 * transaction) and an indexed subject column for "log out everywhere".
 *
 * Pass `{ database }` to use a connection the app already has (the store never closes it;
 * turn on WAL yourself), or `{ path }` to have the store open the file in WAL mode and close it
 * in `close()`; a file it creates is readable by its owner only (mode 0600, and so are the
 * `-wal` and `-shm` files). With `path`, better-sqlite3 is loaded on first use, and a missing
 * package makes that first call reject with `SessionConfigError`; importing this module loads no
 * driver.
 *
 * The table and its indexes are created on first use (see {@link sqliteSchema}). A row past its
 * `expires_at` is never returned, even before gc deletes it: gc runs every `gcInterval` seconds
 * on an unref'd timer, or when `gc()` is called. Driver failures reject with `SessionStoreError`
 * carrying the driver's error as `cause`.
 *
 * Throws `SessionConfigError` at construction for a bad `table`, `gcInterval` or `clock`, an
 * option it does not know, or unless exactly one of `database` and `path` is given.
 *
 * @example
 * import Database from "better-sqlite3";
 * const db = new Database("app.db");
 * db.pragma("journal_mode = WAL");
 * const sessions = createSessions({ store: sqliteStore({ database: db }) });
 */
export function sqliteStore(options: SQLiteStoreOptions): SQLiteStore {
	// No options at all is a missing database or path, refused below like any other.
	const given: Partial<SQLiteStoreOptions> = typeof options === "object" && options !== null ? options : {};
	checkOptionKeys(given, ["database", "path", "table", "gcInterval", "clock"], "sqliteStore");
	const table = checkTable(given.table ?? "sessions");
	const gcInterval = validateGCInterval(given.gcInterval, 300);
	const clock = checkClock(given.clock);
	const { database, path } = given;
	if ((database === undefined) === (path === undefined)) {
		throw new SessionConfigError("database", `or "path" must be given, but not both: the app's better-sqlite3 Database, or a file path for the store to open.`);
	}
	if (database !== undefined && (typeof database !== "object" || database === null || typeof database.prepare !== "function")) {
		throw new SessionConfigError("database", "must be a better-sqlite3 Database.");
	}
	// better-sqlite3 trims the name, and opens a blank one as a temporary database, deleted on close.
	if (path !== undefined && (typeof path !== "string" || path.trim() === "")) {
		throw new SessionConfigError("path", `must be a non-empty file path, got ${describe(path)}.`);
	}

	let statements: Statements | undefined;
	let opening: Promise<Statements> | undefined;
	let owned: SQLiteDatabase | undefined;
	let closed = false;

	async function open(): Promise<Statements> {
		const db = database ?? (owned = await openDatabase(path!));
		try {
			// Before the schema: its IF NOT EXISTS would take the other table as this one, and index it.
			checkSameCase(db.prepare<[string], string>("SELECT name FROM sqlite_master WHERE type = 'table' AND name = ? COLLATE NOCASE").pluck().get(table));
			db.exec(sqliteSchema(table));
			return prepare(db, table);
		} catch (error) {
			if (error instanceof SessionError) throw error;
			throw new SessionStoreError(STORE, `cannot create or prepare table "${table}": ${messageOf(error)}`, { cause: error });
		}
	}

	/**
	 * SQLite compares table names without case: `"Sessions"` is the table `sessions`, so two
	 * stores given those names would mix their sessions. The name must be the table's own.
	 */
	function checkSameCase(existing: string | undefined): void {
		if (existing === undefined || existing === table) return;
		throw new SessionConfigError(
			"table",
			`is "${table}", but the database's table of that name is "${existing}": SQLite table names ignore case, so both would be one table. Set table: "${existing}" to use it, or pick a name that differs in more than case.`,
		);
	}

	function ready(): Promise<Statements> {
		if (closed) return Promise.reject(new SessionStoreError(STORE, "the store was used after close()."));
		opening ??= open().then(
			(prepared) => (statements = prepared),
			(error: unknown) => {
				// Let the next call try again: the cause may be passing (a locked file, a missing directory).
				opening = undefined;
				owned?.close();
				owned = undefined;
				throw error;
			},
		);
		return opening;
	}

	async function run<T>(operation: string, body: (s: Statements, now: number) => T): Promise<T> {
		const s = statements ?? (await ready());
		try {
			return body(s, clock());
		} catch (error) {
			if (error instanceof SessionError) throw error;
			throw new SessionStoreError(STORE, `${operation} failed: ${messageOf(error)}`, { cause: error });
		}
	}

	const store: SQLiteStore = {
		name: STORE,
		table,
		get(key) {
			return run("get", (s, now) => {
				const row = s.get.get(key, now);
				return row ? fromRow(row) : null;
			});
		},
		async set(key, record, expiresAt) {
			await run("set", (s) => s.upsert.run(toRow(key, record, expiresAt)));
		},
		replace(key, record, expiresAt) {
			return run("replace", (s, now) => s.replace.run({ ...toRow(key, record, expiresAt), now }).changes === 1);
		},
		merge(key, changes, expiresAt) {
			return run("merge", (s, now) => s.merge(key, changes, expiresAt, now));
		},
		async delete(key) {
			await run("delete", (s) => s.delete.run(key));
		},
		async touch(key, idleExpiresAt, expiresAt) {
			await run("touch", (s, now) => s.touch.run(idleExpiresAt, expiresAt, key, now));
		},
		listBySubject(subject) {
			return run("listBySubject", (s, now) =>
				s.listBySubject.all(subject, now).map(
					(row): SubjectSession => ({ key: row.key, createdAt: row.created_at, idleExpiresAt: row.idle_expires_at, absoluteExpiresAt: row.absolute_expires_at }),
				),
			);
		},
		deleteBySubject(subject) {
			return run("deleteBySubject", (s, now) => s.deleteBySubject.run(subject, now).changes);
		},
		count() {
			return run("count", (s, now) => s.count.get(now) ?? 0);
		},
		gc() {
			return run("gc", (s, now) => s.gc.run(now).changes);
		},
		async close() {
			const stopped = stopGC();
			closed = true;
			await stopped;
			await opening?.catch(() => undefined);
			statements = undefined;
			owned?.close();
			owned = undefined;
		},
	};
	const stopGC = startGCTimer(gcInterval, () => store.gc());
	return store;
}
