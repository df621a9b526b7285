import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { createServer, type Socket } from "node:net";
import { BSON, MongoClient } from "mongodb";
import type { Collection, Document } from "mongodb";
import { applyChanges, defaultCodec, SessionConfigError, SessionStoreError } from "sessionkit";
import { decodeFieldName, encodeFieldName, mongodbStore } from "sessionkit/stores/mongodb";
import type { MongoDBSessionDocument, MongoDBStore } from "sessionkit/stores/mongodb";
import { randomKey, runId } from "../helpers/keys.js";
import { requireService, serviceURL } from "../services.js";
import { makeRecord, noChanges, storeConformance } from "sessionkit/testing";

const skip = await requireService("mongodb");
const HOUR = 3_600_000;

/** A collection of its own for each caller, dropped by `cleanup`. */
async function openCollection(): Promise<{ client: MongoClient; collection: Collection<MongoDBSessionDocument>; cleanup(): Promise<void> }> {
	const client = new MongoClient(serviceURL.mongodb, { serverSelectionTimeoutMS: 5000 });
	const collection = client.db().collection<MongoDBSessionDocument>(`sessionkit_test_${runId()}`);
	return {
		client,
		collection,
		async cleanup() {
			await collection.drop();
			await client.close();
		},
	};
}

storeConformance(
	"mongodb",
	async () => {
		const { collection, cleanup } = await openCollection();
		const store = mongodbStore({ collection });
		return {
			store,
			async cleanup() {
				await store.close();
				await cleanup();
			},
		};
	},
	{ merge: true, subjects: true, count: true, selfExpiring: true, expiryResolutionMs: 1 },
	{ skip },
);

const LONE_SURROGATE = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/;
const awkwardKeys = ["a.b", "$where", "$", "a$b.c", "..", "%", "%002E", "__proto", "__", "ü.🍪", "a\u0000b", "\uD800", "x\uDC00y", "日本語.キー"];

describe("mongodb store against a real server", { skip }, () => {
	let client: MongoClient;
	let collection: Collection<MongoDBSessionDocument>;
	let cleanup: () => Promise<void>;
	let store: MongoDBStore;

	before(async () => {
		({ client, collection, cleanup } = await openCollection());
		store = mongodbStore({ collection });
		await store.ready();
	});
	after(async () => {
		await store?.close();
		await cleanup?.();
	});

	it("creates a TTL index on expiresAt and a sparse index on subject", async () => {
		const indexes = await collection.listIndexes().toArray();
		const ttl = indexes.find((index) => index.name === "expiresAt_1");
		assert.deepEqual(ttl?.key, { expiresAt: 1 });
		assert.equal(ttl?.expireAfterSeconds, 0);
		const subject = indexes.find((index) => index.name === "subject_1");
		assert.deepEqual(subject?.key, { subject: 1 });
		assert.equal(subject?.sparse, true);
		await store.ready(); // a second call is a no-op, not a conflict
	});

	it("stores the documented shape: a Date expiry, and no subject field without a subject", async () => {
		const key = randomKey();
		const record = makeRecord();
		await store.set(key, record, record.idleExpiresAt);
		const raw = await collection.findOne({ _id: key });
		assert.ok(raw);
		assert.ok(raw.expiresAt instanceof Date);
		assert.equal(raw.expiresAt.getTime(), record.idleExpiresAt);
		assert.equal("subject" in raw, false);
		await store.merge(key, noChanges({ subject: "alice" }), Date.now() + HOUR);
		assert.equal((await collection.findOne({ _id: key }))?.subject, "alice");
		await store.merge(key, noChanges({ subject: null }), Date.now() + HOUR);
		assert.equal("subject" in ((await collection.findOne({ _id: key })) ?? {}), false);
	});

	it("keeps keys with dots, dollars, NUL and lone surrogates apart and intact, through set and merge", async () => {
		const key = randomKey();
		const data = Object.fromEntries(awkwardKeys.map((name, i) => [name, defaultCodec.encode(i)]));
		const record = makeRecord({ data, flash: { "flash.key": defaultCodec.encode("f"), $f: defaultCodec.encode("g") } });
		await store.set(key, record, record.idleExpiresAt);
		assert.deepEqual(await store.get(key), record);

		const ok = await store.merge(key, noChanges({ delete: ["a.b"], set: { "$where": defaultCodec.encode("set") }, increment: { "..": 10, "new.key": 1 }, flashDelete: ["flash.key"], flashSet: { "x.y": defaultCodec.encode("z") } }), Date.now() + HOUR);
		assert.equal(ok, true);
		const loaded = await store.get(key);
		assert.ok(loaded);
		assert.equal("a.b" in loaded.data, false);
		assert.equal(loaded.data.$where, defaultCodec.encode("set"));
		assert.equal(loaded.data[".."], "14");
		assert.equal(loaded.data["new.key"], "1");
		assert.equal(loaded.data["%002E"], defaultCodec.encode(awkwardKeys.indexOf("%002E")));
		assert.deepEqual(loaded.flash, { $f: defaultCodec.encode("g"), "x.y": defaultCodec.encode("z") });
	});

	it("writes values that look like operators or field paths as plain text", async () => {
		const key = randomKey();
		await store.set(key, makeRecord({ data: {} }), Date.now() + HOUR);
		await store.merge(key, noChanges({ set: { a: "$data", b: "$$NOW", c: "{\"$literal\":1}" } }), Date.now() + HOUR);
		assert.deepEqual((await store.get(key))?.data, { a: "$data", b: "$$NOW", c: "{\"$literal\":1}" });
	});

	it("increments exactly: large integers stay whole, fractions stay numbers, non-numbers are replaced", async () => {
		const key = randomKey();
		await store.set(key, makeRecord({ data: { big: "1234567", huge: "9007199254740000", half: "0.5", text: defaultCodec.encode("abc"), neg: "-3" } }), Date.now() + HOUR);
		await store.merge(key, noChanges({ increment: { big: 1, huge: 1, half: 0.25, text: 2, neg: 3 } }), Date.now() + HOUR);
		const data = (await store.get(key))?.data ?? {};
		assert.equal(data.big, "1234568");
		assert.equal(data.huge, "9007199254740001");
		assert.equal(defaultCodec.decode(data.half!), 0.75);
		assert.equal(data.text, "2");
		assert.equal(defaultCodec.decode(data.neg!), 0);
	});

	it("increments as JavaScript adds numbers, keeping the sum a double that reads back as String(n)", async () => {
		const key = randomKey();
		const record = makeRecord({ data: { tenth: "0.2", big: "9007199254740993", huge: "1e400", tiny: "1e-400", million: "1234567" } });
		await store.set(key, record, Date.now() + HOUR);
		const changes = noChanges({ increment: { tenth: 0.1, big: 1, huge: 1, tiny: 1, million: 1, fresh: 0.25 } });
		await store.merge(key, changes, Date.now() + HOUR);
		assert.deepEqual((await store.get(key))?.data, applyChanges(record, changes).data);
		const raw = await collection.findOne({ _id: key });
		assert.equal(raw?.data.tenth, 0.2 + 0.1, "stored as a double");
	});

	it("set then increment of one key in one merge applies both, in order", async () => {
		const key = randomKey();
		await store.set(key, makeRecord({ data: { n: "100" } }), Date.now() + HOUR);
		await store.merge(key, noChanges({ set: { n: "5" }, increment: { n: 2 } }), Date.now() + HOUR);
		assert.equal((await store.get(key))?.data.n, "7");
	});

	it("gc() removes expired documents at once, before the TTL monitor", async () => {
		const key = randomKey();
		await store.set(key, makeRecord(), Date.now() - 1000);
		assert.ok(await store.gc() >= 1);
		assert.equal(await collection.findOne({ _id: key }), null);
	});

	it("with url, opens its own client, creates the collection's indexes, and close() closes only that client", async () => {
		const name = `sessionkit_test_${runId()}`;
		const own = mongodbStore({ url: serviceURL.mongodb, collectionName: name });
		const key = randomKey();
		const record = makeRecord();
		await own.set(key, record, record.idleExpiresAt);
		assert.deepEqual(await own.get(key), record);
		const indexes = await client.db().collection(name).listIndexes().toArray();
		assert.ok(indexes.some((index) => index.name === "expiresAt_1"));
		await own.close();
		await client.db().collection(name).drop();
		assert.ok(await store.count() >= 0, "the caller's client still works");
	});

	it("with createIndexes: false, creates no index", async () => {
		const own = await openCollection();
		const plain = mongodbStore({ collection: own.collection }, { createIndexes: false });
		await plain.set(randomKey(), makeRecord(), Date.now() + HOUR);
		const names = (await own.collection.listIndexes().toArray()).map((index) => index.name);
		assert.deepEqual(names, ["_id_"]);
		await own.cleanup();
	});
});

/**
 * A stand-in for a driver Collection: answers findOne with `document` and records the update of
 * every updateOne. Enough for what the store does with a result, without a server.
 */
function fakeCollection(document: Document | null): { collection: Collection<MongoDBSessionDocument>; updates: Document[] } {
	const updates: Document[] = [];
	const fake = {
		findOne: async () => document,
		find: () => ({ toArray: async () => [] }),
		replaceOne: async () => ({ matchedCount: 1 }),
		updateOne: async (_filter: Document, update: Document) => {
			updates.push(update);
			return { matchedCount: 1 };
		},
		deleteOne: async () => ({ deletedCount: 1 }),
		deleteMany: async () => ({ deletedCount: 0 }),
		countDocuments: async () => 0,
		createIndexes: async () => [],
	};
	return { collection: fake as unknown as Collection<MongoDBSessionDocument>, updates };
}

describe("mongodb store without a server", () => {
	it("reads an incremented value (a double) back as JavaScript prints the number, the text applyChanges writes", async () => {
		const sums = [0.2 + 0.1, 2 ** 53, 1e21, 1234567, -7.5, 1e-7, 0];
		const { collection } = fakeCollection({
			_id: "k",
			data: Object.fromEntries(sums.map((n, i) => [`n${i}`, n])),
			flash: {},
			createdAt: 1,
			idleExpiresAt: 2,
			absoluteExpiresAt: 3,
			expiresAt: new Date(2),
		});
		const loaded = await mongodbStore({ collection }, { createIndexes: false }).get(randomKey());
		assert.deepEqual(loaded?.data, Object.fromEntries(sums.map((n, i) => [`n${i}`, String(n)])));
	});

	it("increments in double arithmetic, as the contract adds (0.2 + 0.1 is 0.30000000000000004), never Decimal128 or the server's %g text", async () => {
		const { collection, updates } = fakeCollection(null);
		await mongodbStore({ collection }, { createIndexes: false }).merge(randomKey(), noChanges({ increment: { n: 0.1 } }), Date.now() + HOUR);
		const pipeline = JSON.stringify(updates[0]);
		// Decimal128 adds exactly ("0.2" plus 0.1 is "0.3", "9007199254740993" plus 1 is
		// "9007199254740994", "1e400" is in its range), and $toString of a double keeps six digits.
		assert.doesNotMatch(pipeline, /decimal|\$toDecimal|\$toString/i, pipeline);
		assert.match(pipeline, /"to":"double"/);
		assert.match(pipeline, /"\$toDouble":\{"\$literal":0.1\}/);
	});

	it("refuses calls after close(): with url, one would open a new client that nothing closes", async () => {
		// A server that accepts connections and never answers: every connection the driver opens shows.
		const sockets = new Set<Socket>();
		const silent = createServer((socket) => sockets.add(socket));
		await new Promise<void>((resolve) => silent.listen(0, "127.0.0.1", resolve));
		const { port } = silent.address() as { port: number };
		try {
			const store = mongodbStore({ url: `mongodb://127.0.0.1:${port}/sessionkit` }, { timeout: 0.3 });
			await assert.rejects(store.get(randomKey()), SessionStoreError);
			assert.ok(sockets.size > 0, "the driver connected");
			await store.close();
			const before = sockets.size;
			const started = Date.now();
			await assert.rejects(store.get(randomKey()), (error: unknown) => {
				assert.ok(error instanceof SessionStoreError);
				assert.match(error.message, /^sessionkit\/mongodb: get called after close\(\)\.$/);
				return true;
			});
			assert.ok(Date.now() - started < 100, "at once, without a server selection");
			await assert.rejects(store.set(randomKey(), makeRecord(), Date.now() + HOUR), /called after close/);
			await new Promise((resolve) => setTimeout(resolve, 200));
			assert.equal(sockets.size, before, "no new connection after close()");

			const { collection } = fakeCollection(null);
			const borrowed = mongodbStore({ collection }, { createIndexes: false });
			await borrowed.close();
			await assert.rejects(borrowed.get(randomKey()), /called after close/);
		} finally {
			for (const socket of sockets) socket.destroy();
			await new Promise((resolve) => silent.close(resolve));
		}
	});

	it("round-trips awkward keys through encodeFieldName and decodeFieldName", () => {
		const keys = [...awkwardKeys, "userId", "__x__", "a__b", "ünïcödé", "🍪", "%41", "%%", "a%", "100%.$", "\uD83C\uDF6A.\uD83C"];
		for (const key of keys) {
			const field = encodeFieldName(key);
			assert.equal(decodeFieldName(field), key, JSON.stringify(key));
			assert.doesNotMatch(field, /[.$\0]/, `${JSON.stringify(key)} → ${JSON.stringify(field)}`);
			assert.doesNotMatch(field, LONE_SURROGATE, `${JSON.stringify(key)} has no lone surrogate once encoded`);
		}
		assert.equal(encodeFieldName("userId"), "userId", "ordinary keys are stored as they are");
		assert.equal(encodeFieldName("a.b"), "a%002Eb");
		assert.equal(encodeFieldName("__"), "__");
		assert.equal(new Set(keys.map(encodeFieldName)).size, keys.length, "distinct keys stay distinct");
	});

	it("encoded names survive the driver's BSON encoding, where raw ones do not", () => {
		for (const key of awkwardKeys) {
			const field = encodeFieldName(key);
			const back = BSON.deserialize(BSON.serialize({ data: { [field]: "v" } })) as { data: Record<string, string> };
			assert.deepEqual(Object.keys(back.data).map(decodeFieldName), [key]);
		}
		assert.throws(() => BSON.serialize({ data: { "a\u0000b": "v" } }), "NUL is refused in a raw field name");
		const lone = BSON.deserialize(BSON.serialize({ data: { "\uD800": "v" } })) as { data: Record<string, string> };
		assert.notDeepEqual(Object.keys(lone.data), ["\uD800"], "a raw lone surrogate does not come back");
	});

	it("refuses bad options at construction with SessionConfigError naming the option", () => {
		const collection = new MongoClient("mongodb://127.0.0.1:1").db("x").collection<MongoDBSessionDocument>("sessions");
		const cases: Array<[unknown, unknown, string]> = [
			[undefined, undefined, "collection"],
			[{}, undefined, "collection"],
			[{ collection: {} }, undefined, "collection"],
			[{ collection: "sessions" }, undefined, "collection"],
			[{ collection, url: "mongodb://127.0.0.1" }, undefined, "collection"],
			[{ collection, database: "app" }, undefined, "database"],
			[{ collection, collectionName: "s" }, undefined, "collectionName"],
			[{ url: "postgres://127.0.0.1" }, undefined, "url"],
			[{ url: 42 }, undefined, "url"],
			[{ url: "mongodb://127.0.0.1", database: "a.b" }, undefined, "database"],
			[{ url: "mongodb://127.0.0.1", database: "" }, undefined, "database"],
			[{ url: "mongodb://127.0.0.1", collectionName: "$cmd" }, undefined, "collectionName"],
			[{ url: "mongodb://127.0.0.1", collectionName: "system.users" }, undefined, "collectionName"],
			[{ url: "mongodb://127.0.0.1", colection: "typo" }, undefined, "colection"],
			[{ collection }, { timeout: 0 }, "timeout"],
			[{ collection }, { timeout: -1 }, "timeout"],
			[{ collection }, { timeout: "5" }, "timeout"],
			// Past 2147483 s the driver's timers fire after 1 ms: every server selection failed at once.
			[{ collection }, { timeout: 2_147_484 }, "timeout"],
			[{ url: "mongodb://127.0.0.1" }, { timeout: 3_000_000 }, "timeout"],
			[{ collection }, { createIndexes: "yes" }, "createIndexes"],
			[{ collection }, { createIndex: false }, "createIndex"],
			[{ collection }, null, "options"],
		];
		for (const [source, options, option] of cases) {
			assert.throws(() => mongodbStore(source as never, options as never), (error: unknown) => {
				assert.ok(error instanceof SessionConfigError, `expected a SessionConfigError for ${option}, got ${String(error)}`);
				assert.equal(error.option, option);
				return true;
			});
		}
		assert.doesNotThrow(() => mongodbStore({ collection }, { timeout: 0.5, createIndexes: false }));
		assert.doesNotThrow(() => mongodbStore({ collection }, { timeout: 2_147_483 }));
		assert.doesNotThrow(() => mongodbStore({ url: "mongodb+srv://cluster.example.net/app", database: "app", collectionName: "web_sessions" }));
	});

	it("with the app's own client, rejects within its timeout a call a server never answers (the driver would wait 30 s)", async () => {
		// A server that accepts connections and never answers, as a frozen one does.
		const sockets = new Set<Socket>();
		const silent = createServer((socket) => sockets.add(socket));
		await new Promise<void>((resolve) => silent.listen(0, "127.0.0.1", resolve));
		const client = new MongoClient(`mongodb://127.0.0.1:${(silent.address() as { port: number }).port}/sessionkit`);
		try {
			const store = mongodbStore({ collection: client.db("sessionkit").collection("sessions") }, { timeout: 0.3 });
			for (const call of [() => store.get(randomKey()), () => store.merge(randomKey(), noChanges({ increment: { n: 1 } }), Date.now() + HOUR)]) {
				const started = Date.now();
				await assert.rejects(call(), (error: unknown) => {
					assert.ok(error instanceof SessionStoreError);
					assert.match(error.message, /^sessionkit\/mongodb: (get|merge) got no answer within 0.3 s\. Is MongoDB reachable\?$/);
					return true;
				});
				const took = Date.now() - started;
				assert.ok(took >= 300 && took < 1500, `gave up after ${took} ms`);
			}
		} finally {
			await client.close(true);
			for (const socket of sockets) socket.destroy();
			await new Promise((resolve) => silent.close(resolve));
		}
	});

	it("rejects with SessionStoreError, within the timeout, when the server cannot be reached", async () => {
		const store = mongodbStore({ url: "mongodb://127.0.0.1:1/sessionkit" }, { timeout: 0.5 });
		const started = Date.now();
		await assert.rejects(store.get(randomKey()), (error: unknown) => {
			assert.ok(error instanceof SessionStoreError);
			assert.equal(error.store, "mongodb");
			assert.ok(error.cause instanceof Error, "the driver's error is the cause");
			return true;
		});
		assert.ok(Date.now() - started < 3000, `gave up after ${Date.now() - started} ms`);
		await store.close();
	});
});
