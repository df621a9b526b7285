import type { Collection, Document, Filter, MongoClient } from "mongodb";
import { SessionConfigError, SessionError, SessionStoreError } from "../core/errors.js";
import type { AsyncSessionStore, RecordChanges, StoredRecord, SubjectSession } from "../core/store.js";
import { checkTimeout } from "./internal/timeout.js";
import { checkOptionKeys } from "./internal/option-keys.js";

/**
 * One session as the MongoDB store keeps it. Field names inside `data` and `flash` are
 * encoded with {@link encodeFieldName}; decode them with {@link decodeFieldName}.
 */
export interface MongoDBSessionDocument {
	/** The store key: SHA-256 of the token, 64 hex characters. */
	_id: string;
	/**
	 * Codec strings; a value that `merge` incremented is a double, which the store reads back as
	 * JavaScript prints it (`String(n)`).
	 */
	data: Record<string, string | number>;
	flash: Record<string, string>;
	/** Absent when the session has no subject, which keeps the sparse subject index small. */
	subject?: string;
	createdAt: number;
	idleExpiresAt: number;
	absoluteExpiresAt: number;
	/** The earlier deadline, as a `Date` for the TTL index. */
	expiresAt: Date;
}

/** Where the sessions live: a collection you opened, or a URL the store connects to itself. */
export type MongoDBSource =
	| {
			/** A collection from your own `MongoClient`; the store never closes its client. */
			collection: Collection<MongoDBSessionDocument>;
	  }
	| {
			/** A `mongodb://` or `mongodb+srv://` connection string; the store creates the client and `close()` closes it. */
			url: string;
			/** @default the database named in the URL (the driver's default, "test", if none) */
			database?: string;
			/** @default "sessions" */
			collectionName?: string;
	  };

/** Options of {@link mongodbStore}. */
export interface MongoDBStoreOptions {
	/**
	 * Create the TTL index on `expiresAt` and the sparse index on `subject` before the first
	 * operation. Turn it off when the store's user may not create indexes (create them once by
	 * hand, see docs/stores/mongodb.md).
	 * @default true
	 */
	createIndexes?: boolean;
	/**
	 * Seconds one operation may take: sent as `maxTimeMS` and, with `url`, as
	 * `serverSelectionTimeoutMS`; past it the call rejects with `SessionStoreError` whatever the
	 * server does. Above 0, at most 2147483.
	 * @default 5
	 */
	timeout?: number;
}

/** The MongoDB store, with its extras. */
export interface MongoDBStore extends AsyncSessionStore {
	merge(key: string, changes: RecordChanges, expiresAt: number): Promise<boolean>;
	listBySubject(subject: string): Promise<SubjectSession[]>;
	deleteBySubject(subject: string): Promise<number>;
	count(): Promise<number>;
	gc(): Promise<number>;
	close(): Promise<void>;
	/**
	 * Connects (with `url`) and creates the indexes now, so a bad URL or a missing permission
	 * fails at startup instead of at the first request. Every other method does it itself.
	 */
	ready(): Promise<void>;
}

type SessionCollection = Collection<MongoDBSessionDocument>;

const NAME = "mongodb";
// Characters MongoDB refuses in database names (and "." which would end one).
const DATABASE_NAME = /^[^/\\. "$*<>:|?\0]{1,63}$/;
const COLLECTION_NAME = /^(?!system\.)[^$\0]{1,120}$/;
const COLLECTION_METHODS = ["findOne", "find", "replaceOne", "updateOne", "deleteOne", "deleteMany", "countDocuments", "createIndexes"] as const;

// "%", "." and "$" would be read as an escape, a path separator and an operator or field
// reference; NUL cannot appear in a BSON field name; a lone surrogate would be replaced by
// U+FFFD when the driver writes UTF-8. Every other character stays as it is.
const UNSAFE_IN_FIELD_NAME = /[%.$\0]|[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/g;
const ESCAPE = /%([0-9A-F]{4})/g;

/**
 * A session key as a MongoDB field name that is never a path, an operator or a field
 * reference: `%`, `.`, `$`, NUL and lone surrogates become `%` and four hex digits
 * (`"a.b"` → `"a%002Eb"`). {@link decodeFieldName} reverses it exactly.
 */
export function encodeFieldName(name: string): string {
	return name.replace(UNSAFE_IN_FIELD_NAME, (char) => `%${char.charCodeAt(0).toString(16).toUpperCase().padStart(4, "0")}`);
}

/** The session key that {@link encodeFieldName} turned into `field`. */
export function decodeFieldName(field: string): string {
	return field.replace(ESCAPE, (_, hex: string) => String.fromCharCode(Number.parseInt(hex, 16)));
}

function encodeFields(map: Record<string, string>): Record<string, string> {
	return Object.fromEntries(Object.entries(map).map(([key, value]) => [encodeFieldName(key), value]));
}

/** The fields with their names decoded; a number (an incremented value) as JavaScript prints it. */
function decodeFields(map: Record<string, string | number> | undefined): Record<string, string> {
	return Object.fromEntries(Object.entries(map ?? {}).map(([field, value]) => [decodeFieldName(field), typeof value === "number" ? String(value) : value]));
}

function toDocument(record: StoredRecord, expiresAt: number): Omit<MongoDBSessionDocument, "_id"> {
	const document: Omit<MongoDBSessionDocument, "_id"> = {
		data: encodeFields(record.data),
		flash: encodeFields(record.flash),
		createdAt: record.createdAt,
		idleExpiresAt: record.idleExpiresAt,
		absoluteExpiresAt: record.absoluteExpiresAt,
		expiresAt: new Date(expiresAt),
	};
	if (record.subject !== null) document.subject = record.subject;
	return document;
}

function toRecord(document: MongoDBSessionDocument): StoredRecord {
	return {
		data: decodeFields(document.data),
		flash: decodeFields(document.flash),
		createdAt: document.createdAt,
		idleExpiresAt: document.idleExpiresAt,
		absoluteExpiresAt: document.absoluteExpiresAt,
		subject: document.subject ?? null,
	};
}

/**
 * `changes` as one update pipeline, in the order the contract sets. Each group is its own
 * stage: a stage reads the document as the previous stage left it, so a key both set and
 * incremented in one request is set first, then incremented. Every value goes in `$literal`,
 * so a codec string starting with `$` is never read as a field reference.
 */
function mergePipeline(changes: RecordChanges, expiresAt: number): Document[] {
	const path = (root: "data" | "flash", key: string) => `${root}.${encodeFieldName(key)}`;
	const stages: Document[] = [];
	if (changes.clear) stages.push({ $set: { data: { $literal: {} } } });
	if (changes.delete.length > 0) stages.push({ $unset: changes.delete.map((key) => path("data", key)) });
	const set = Object.entries(changes.set);
	if (set.length > 0) stages.push({ $set: Object.fromEntries(set.map(([key, value]) => [path("data", key), { $literal: value }])) });
	const increment = Object.entries(changes.increment);
	if (increment.length > 0) {
		stages.push({ $set: Object.fromEntries(increment.map(([key, by]) => [path("data", key), incremented(path("data", key), by)])) });
	}
	if (changes.flashDelete.length > 0) stages.push({ $unset: changes.flashDelete.map((key) => path("flash", key)) });
	const flashSet = Object.entries(changes.flashSet);
	if (flashSet.length > 0) stages.push({ $set: Object.fromEntries(flashSet.map(([key, value]) => [path("flash", key), { $literal: value }])) });
	if (changes.subject === null) stages.push({ $unset: "subject" });
	const last: Document = { idleExpiresAt: { $literal: changes.idleExpiresAt }, expiresAt: { $literal: new Date(expiresAt) } };
	if (typeof changes.subject === "string") last.subject = { $literal: changes.subject };
	stages.push({ $set: last });
	return stages;
}

/**
 * The number at `path` plus `by`, as a double: the contract adds as JavaScript does
 * (`applyChanges`: `"0.2"` plus 0.1 is `0.30000000000000004`, `"9007199254740993"` plus 1 is
 * `9007199254740992`), which Decimal128's exact sums do not. The sum stays a double in the
 * document, and the store reads it back with `String(n)`, the text `applyChanges` writes: the
 * server's own double-to-string (`$toString`) keeps only six significant digits (`%g`). A
 * missing value, one that is not a number, or one that reads as ±Infinity or NaN (`"1e400"`)
 * counts as 0.
 */
function incremented(path: string, by: number): Document {
	return {
		$let: {
			vars: { n: { $convert: { input: `$${path}`, to: "double", onError: 0, onNull: 0 } } },
			in: {
				$add: [
					{ $cond: [{ $and: [{ $gt: ["$$n", Number.NEGATIVE_INFINITY] }, { $lt: ["$$n", Number.POSITIVE_INFINITY] }] }, "$$n", 0] },
					{ $toDouble: { $literal: by } },
				],
			},
		},
	};
}

function fail(option: string, message: string): never {
	throw new SessionConfigError(option, message);
}

const SOURCE_KEYS = ["collection", "url", "database", "collectionName"];
const OPTION_KEYS = ["createIndexes", "timeout"];
const DRIVER_ERROR_GRACE_MS = 200;

function checkSource(source: unknown): asserts source is MongoDBSource {
	if (typeof source !== "object" || source === null) fail("collection", "is required: mongodbStore({ collection }) or mongodbStore({ url }).");
	const given = source as Partial<Record<"collection" | "url" | "database" | "collectionName", unknown>>;
	if (given.collection !== undefined && given.url !== undefined) fail("collection", "and url cannot both be given: pass one.");
	if (given.collection !== undefined) {
		const collection = given.collection as Record<string, unknown> | null;
		if (typeof collection !== "object" || collection === null || COLLECTION_METHODS.some((method) => typeof collection[method] !== "function")) {
			fail("collection", "must be a Collection from the mongodb driver, e.g. client.db(\"app\").collection(\"sessions\").");
		}
		if (given.database !== undefined) fail("database", "is only used with url; the collection already names its database.");
		if (given.collectionName !== undefined) fail("collectionName", "is only used with url.");
	} else if (given.url !== undefined) {
		if (typeof given.url !== "string" || !/^mongodb(\+srv)?:\/\//.test(given.url)) fail("url", "must be a mongodb:// or mongodb+srv:// connection string.");
		if (given.database !== undefined && (typeof given.database !== "string" || !DATABASE_NAME.test(given.database))) {
			fail("database", `must be a MongoDB database name (1 to 63 characters, none of /\\. "$*<>:|?), got ${JSON.stringify(given.database)}.`);
		}
		if (given.collectionName !== undefined && (typeof given.collectionName !== "string" || !COLLECTION_NAME.test(given.collectionName))) {
			fail("collectionName", `must be a collection name without "$" or NUL, not starting with "system.", got ${JSON.stringify(given.collectionName)}.`);
		}
	} else {
		fail("collection", "is required: mongodbStore({ collection }) or mongodbStore({ url }).");
	}
	checkOptionKeys(source, SOURCE_KEYS, "mongodbStore");
}

/**
 * Sessions in a MongoDB collection, one document per session. Expired documents are removed
 * by MongoDB's TTL monitor (about once a minute); until then every read filters them out, and
 * `gc()` removes them at once. `merge` is a single `updateOne` with an update pipeline, so
 * parallel requests keep each other's changes and increments add up.
 *
 * Needs MongoDB 4.2 or later (update pipelines). Throws `SessionConfigError` for a bad option;
 * every method rejects with `SessionStoreError` when MongoDB fails or times out.
 *
 * @example
 * const client = new MongoClient(process.env.MONGODB_URL!);
 * const store = mongodbStore({ collection: client.db("app").collection<MongoDBSessionDocument>("sessions") });
 * const sessions = createSessions({ store });
 */
export function mongodbStore(source: MongoDBSource, options: MongoDBStoreOptions = {}): MongoDBStore {
	checkSource(source);
	if (typeof options !== "object" || options === null) fail("options", "must be an object: { createIndexes?, timeout? }.");
	checkOptionKeys(options, OPTION_KEYS, "mongodbStore");
	const timeout = checkTimeout(options.timeout, 5);
	const createIndexes = options.createIndexes ?? true;
	if (typeof createIndexes !== "boolean") fail("createIndexes", `must be true or false, got ${String(createIndexes)}.`);
	const maxTimeMS = Math.ceil(timeout * 1000);

	let client: MongoClient | null = null;
	let opened: Promise<SessionCollection> | undefined;
	let indexed: Promise<void> | undefined;
	let closed = false;

	async function open(): Promise<SessionCollection> {
		if ("collection" in source) return source.collection;
		let driver: typeof import("mongodb");
		try {
			driver = await import("mongodb");
		} catch (cause) {
			throw new SessionConfigError("url", "needs the mongodb driver: npm install mongodb", { cause });
		}
		client = new driver.MongoClient(source.url, { serverSelectionTimeoutMS: maxTimeMS });
		return client.db(source.database).collection<MongoDBSessionDocument>(source.collectionName ?? "sessions");
	}

	async function ensureIndexes(collection: SessionCollection): Promise<void> {
		try {
			await collection.createIndexes(
				[
					// Default names, so the same indexes made by hand (docs/stores/mongodb.md) are a no-op here.
					{ key: { expiresAt: 1 }, expireAfterSeconds: 0 },
					{ key: { subject: 1 }, sparse: true },
				],
				{ maxTimeMS },
			);
		} catch (error) {
			const code = (error as { code?: unknown }).code;
			// 85/86: an index on the same key exists with other options or another name.
			if (code === 85 || code === 86) {
				throw new SessionStoreError(NAME, `an index on "expiresAt" or "subject" already exists with other options. Drop it, or set createIndexes: false and create the indexes shown in docs/stores/mongodb.md.`, { cause: error });
			}
			throw error;
		}
	}

	async function collection(): Promise<SessionCollection> {
		const target = await (opened ??= open());
		if (createIndexes) {
			await (indexed ??= ensureIndexes(target).catch((error: unknown) => {
				indexed = undefined; // a later call tries again
				throw error;
			}));
		}
		return target;
	}

	async function run<T>(operation: string, action: (collection: SessionCollection) => Promise<T>): Promise<T> {
		// With url, a call after close() would open a new client that nothing ever closes. A call
		// that was opening the collection while close() ran says so too, not "not connected".
		const afterClose = (): SessionStoreError => new SessionStoreError(NAME, `${operation} called after close().`);
		if (closed) throw afterClose();
		// maxTimeMS bounds only the server's work: a server that stops answering (frozen, or a
		// network that drops packets) would hold the call until the driver's own timers, 30 s or
		// more. The whole call, connecting and creating indexes included, rejects past `timeout`:
		// a moment after it, so that the driver's own error (a server selection that failed,
		// with its reason) wins where it has one.
		let timer: ReturnType<typeof setTimeout> | undefined;
		const late = new Promise<never>((_, reject) => {
			timer = setTimeout(() => reject(new SessionStoreError(NAME, `${operation} got no answer within ${timeout} s. Is MongoDB reachable?`)), maxTimeMS + DRIVER_ERROR_GRACE_MS);
		});
		try {
			const target = await Promise.race([collection(), late]);
			if (closed) throw afterClose();
			return await Promise.race([action(target), late]);
		} catch (error) {
			if (error instanceof SessionError) throw error;
			const detail = error instanceof Error ? error.message : String(error);
			throw new SessionStoreError(NAME, `${operation} failed: ${detail}`, { cause: error });
		} finally {
			clearTimeout(timer);
		}
	}

	// Keys and subjects only ever reach a filter as strings: an object would be an operator.
	const live = (key: string): Filter<MongoDBSessionDocument> => ({ _id: String(key), expiresAt: { $gt: new Date() } });

	return {
		name: NAME,

		async get(key) {
			const document = await run("get", (c) => c.findOne(live(key), { maxTimeMS }));
			return document === null ? null : toRecord(document);
		},

		async set(key, record, expiresAt) {
			await run("set", (c) => c.replaceOne({ _id: String(key) }, toDocument(record, expiresAt), { upsert: true, maxTimeMS }));
		},

		async replace(key, record, expiresAt) {
			const result = await run("replace", (c) => c.replaceOne(live(key), toDocument(record, expiresAt), { maxTimeMS }));
			return result.matchedCount === 1;
		},

		async merge(key, changes, expiresAt) {
			const result = await run("merge", (c) => c.updateOne(live(key), mergePipeline(changes, expiresAt), { maxTimeMS }));
			return result.matchedCount === 1;
		},

		async delete(key) {
			await run("delete", (c) => c.deleteOne({ _id: String(key) }, { maxTimeMS }));
		},

		async touch(key, idleExpiresAt, expiresAt) {
			await run("touch", (c) => c.updateOne(live(key), { $set: { idleExpiresAt, expiresAt: new Date(expiresAt) } }, { maxTimeMS }));
		},

		async listBySubject(subject) {
			if (typeof subject !== "string") return [];
			const documents = await run("listBySubject", (c) =>
				c
					.find({ subject, expiresAt: { $gt: new Date() } }, { projection: { createdAt: 1, idleExpiresAt: 1, absoluteExpiresAt: 1 }, maxTimeMS })
					.toArray(),
			);
			return documents.map((d) => ({ key: d._id, createdAt: d.createdAt, idleExpiresAt: d.idleExpiresAt, absoluteExpiresAt: d.absoluteExpiresAt }));
		},

		async deleteBySubject(subject) {
			if (typeof subject !== "string") return 0;
			const result = await run("deleteBySubject", (c) => c.deleteMany({ subject, expiresAt: { $gt: new Date() } }, { maxTimeMS }));
			return result.deletedCount;
		},

		async count() {
			return run("count", (c) => c.countDocuments({ expiresAt: { $gt: new Date() } }, { maxTimeMS }));
		},

		async gc() {
			const result = await run("gc", (c) => c.deleteMany({ expiresAt: { $lte: new Date() } }, { maxTimeMS }));
			return result.deletedCount;
		},

		async ready() {
			await run("ready", async () => undefined);
		},

		async close() {
			closed = true;
			if (opened) await Promise.allSettled([opened]);
			const created = client;
			client = null;
			opened = undefined;
			indexed = undefined;
			await created?.close();
		},
	};
}
