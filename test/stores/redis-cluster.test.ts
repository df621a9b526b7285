import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { Cluster } from "ioredis";
import { SessionStoreError } from "sessionkit";
import { redisStore } from "sessionkit/stores/redis";
import { randomKey, runId, sleep } from "../helpers/keys.js";
import { startTcpProxy } from "../helpers/tcp-proxy.js";
import { makeRecord, noChanges, storeConformance } from "sessionkit/testing";
import { requireService, serviceURL } from "../services.js";

const HOUR = 3_600_000;
const skip = await requireService("redis-cluster");

function clusterNodes(): Array<{ host: string; port: number }> {
	return serviceURL["redis-cluster"].split(",").map((hostPort) => {
		const [host, port] = hostPort.trim().split(":");
		return { host: host!, port: Number(port) };
	});
}

function cluster(): Cluster {
	const client = new Cluster(clusterNodes(), { redisOptions: { maxRetriesPerRequest: 1 } });
	client.on("error", () => {});
	return client;
}

/** Every key under `prefix`, master by master (each master holds only its own slots). */
async function keysByMaster(client: Cluster, prefix: string): Promise<string[][]> {
	return Promise.all(
		client.nodes("master").map(async (node) => {
			const found: string[] = [];
			let cursor = "0";
			do {
				const [next, keys] = await node.scan(cursor, "MATCH", `${prefix}*`, "COUNT", 1000);
				cursor = next;
				found.push(...keys);
			} while (cursor !== "0");
			return found;
		}),
	);
}

async function dropPrefix(client: Cluster, prefix: string): Promise<void> {
	const masters = client.nodes("master");
	const byMaster = await keysByMaster(client, prefix);
	// One DEL per key: keys in different slots cannot share a command, even on one master.
	await Promise.all(byMaster.flatMap((keys, n) => keys.map((key) => masters[n]!.del(key))));
	await client.quit();
}

storeConformance(
	"redis cluster",
	async () => {
		const client = cluster();
		const prefix = `sktest:${runId()}:`;
		return { store: redisStore({ client }, { prefix }), cleanup: () => dropPrefix(client, prefix) };
	},
	{ merge: true, subjects: true, count: true, selfExpiring: true, expiryResolutionMs: 1 },
	{ skip },
);

describe("redis store on a cluster", { skip }, () => {
	let client: Cluster;
	const prefix = `sktest:${runId()}:`;
	before(async () => {
		client = cluster();
		await client.set(`${prefix}{warm}`, "1"); // the slot map is loaded on first use
	});
	after(() => dropPrefix(client, prefix));

	it("on a client set up as the docs say, a merge whose answer is lost to a dropped connection rejects at once, applied once, never sent again", async () => {
		// A proxy in front of every master; natMap sends the client through them.
		const nodes = clusterNodes();
		const proxies = await Promise.all(nodes.map((node) => startTcpProxy(node)));
		const natMap = Object.fromEntries(nodes.map((node, n) => [`${node.host}:${node.port}`, { host: "127.0.0.1", port: proxies[n]!.port }]));
		const proxied = new Cluster([{ host: "127.0.0.1", port: proxies[0]!.port }], {
			natMap,
			clusterNodeRetryStrategy: (times) => Math.min(times * 50, 2000),
			redisOptions: { maxRetriesPerRequest: 0, autoResendUnfulfilledCommands: false },
		});
		proxied.on("error", () => {});
		try {
			const store = redisStore({ client: proxied }, { prefix, timeout: 2 });
			const key = randomKey();
			const counter = (): Promise<string | null> => client.hget(`${prefix}{${key}}`, "d:n");
			await store.set(key, makeRecord({ data: { n: "0" } }), Date.now() + HOUR);
			// Loads the script: the merge below is one EVALSHA, which the server runs.
			assert.equal(await store.merge!(key, noChanges({ increment: { n: 1 } }), Date.now() + HOUR), true);
			const cuts = proxies.map((proxy) => proxy.cutAfterRequest(key));
			const started = Date.now();
			const outcome = await store.merge!(key, noChanges({ increment: { n: 1 } }), Date.now() + HOUR).then(
				(merged) => ({ merged }),
				(error: unknown) => ({ error }),
			);
			await Promise.race(cuts);
			assert.equal(await counter(), "2", "the server ran the increment once, and only once");
			assert.ok("error" in outcome && outcome.error instanceof SessionStoreError, `the merge whose answer was lost rejects: ${JSON.stringify(outcome)}`);
			assert.ok(Date.now() - started < 1000, `took ${Date.now() - started} ms: ${outcome.error.message}`);
			// The node reconnects by itself: the next calls go through, each applied once.
			assert.equal(await store.merge!(key, noChanges({ increment: { n: 1 } }), Date.now() + HOUR), true);
			assert.equal(await counter(), "3");
		} finally {
			proxied.disconnect();
			await Promise.all(proxies.map((proxy) => proxy.close()));
		}
	});

	it("keeps each session in one key, in the slot of its own hash tag", async () => {
		const store = redisStore({ client }, { prefix });
		const key = randomKey();
		await store.set(key, makeRecord({ subject: `s-${runId()}` }), Date.now() + HOUR);
		await store.merge!(key, noChanges({ set: { a: "1" }, increment: { n: 2 }, flashSet: { f: "x" } }), Date.now() + HOUR);
		await store.touch(key, Date.now() + 2 * HOUR, Date.now() + 2 * HOUR);
		const sessionKeys = (await keysByMaster(client, prefix)).flat().filter((k) => k.includes(key));
		assert.deepEqual(sessionKeys, [`${prefix}{${key}}`], "every operation on the session touched only its one key");
		assert.equal(await client.cluster("KEYSLOT", `${prefix}{${key}}`), await client.cluster("KEYSLOT", key));
	});

	it("keeps in the index a login or subject change whose session is not written yet when the subject is listed or deleted", async () => {
		const store = redisStore({ client }, { prefix });
		for (const operation of ["listBySubject", "deleteBySubject"] as const) {
			for (const write of ["login", "subject change"] as const) {
				const subject = `late-${runId()}`;
				const key = randomKey();
				if (write === "subject change") await store.set(key, makeRecord({ subject: `before-${runId()}` }), Date.now() + HOUR);
				// The session's own write (an evalsha on its key) waits: the index, in another slot, is written first.
				let held: (() => void) | undefined;
				const slow = new Proxy(client, {
					get(target, name) {
						const value = Reflect.get(target, name, target) as unknown;
						if (typeof value !== "function") return value;
						const call = (...args: unknown[]) => (value as (...a: unknown[]) => unknown).apply(target, args);
						if (name !== "evalsha") return call;
						return async (...args: unknown[]) => {
							// The keys and arguments come as one array: [key, ...args].
							if ((args[2] as string[])[0] === `${prefix}{${key}}`) await new Promise<void>((resolve) => (held = resolve));
							return call(...args);
						};
					},
				});
				const writer = redisStore({ client: slow }, { prefix });
				const writing =
					write === "login"
						? writer.set(key, makeRecord({ subject }), Date.now() + HOUR)
						: writer.merge!(key, noChanges({ subject }), Date.now() + HOUR);
				for (let waited = 0; held === undefined && waited < 2000; waited += 5) await sleep(5);
				assert.ok(held, "the index is written, the session not yet");
				await store[operation]!(subject);
				held();
				await writing;
				const label = `${write} during ${operation}`;
				assert.equal((await store.get(key))?.subject, subject, label);
				assert.deepEqual((await store.listBySubject!(subject)).map((s) => s.key), [key], `${label}: listed once written`);
				assert.equal(await store.deleteBySubject!(subject), 1, `${label}: "log out everywhere" finds it`);
				assert.equal(await store.get(key), null, label);
			}
		}
	});

	it("on a client with ioredis's stringNumbers option, deleteBySubject counts its deletions and keeps the member of a login not written yet", async () => {
		const nodes = serviceURL["redis-cluster"].split(",").map((hostPort) => {
			const [host, port] = hostPort.trim().split(":");
			return { host: host!, port: Number(port) };
		});
		const stringy = new Cluster(nodes, { redisOptions: { maxRetriesPerRequest: 1, stringNumbers: true } });
		stringy.on("error", () => {});
		try {
			const store = redisStore({ client: stringy }, { prefix });
			const subject = `strnum-${runId()}`;
			const [live, late] = [randomKey(), randomKey()];
			await store.set(live, makeRecord({ subject }), Date.now() + HOUR);
			// A login whose index write has landed and whose session write has not yet.
			const index = `${prefix}subject:{${subject}}`;
			await client.zadd(index, Date.now() + HOUR, late);
			const deleted = await store.deleteBySubject!(subject);
			assert.deepEqual(await client.zrange(index, "0", "-1"), [late], "the late login's member stays");
			assert.equal(deleted, 1);
			await store.set(late, makeRecord({ subject }), Date.now() + HOUR);
			assert.equal(await store.merge!(late, noChanges({ increment: { n: 1 } }), Date.now() + HOUR), true);
			assert.equal(await store.deleteBySubject!(subject), 1);
		} finally {
			stringy.disconnect();
		}
	});

	it("lists and deletes one subject's sessions spread over every master", async () => {
		const store = redisStore({ client }, { prefix });
		const subject = `user-${runId()}`;
		const keys = Array.from({ length: 24 }, () => randomKey());
		for (const key of keys) await store.set(key, makeRecord({ subject }), Date.now() + HOUR);

		const masters = client.nodes("master");
		assert.equal(masters.length, 3);
		const wanted = new Set(keys.map((k) => `${prefix}{${k}}`));
		const onMaster = (await keysByMaster(client, prefix)).map((found) => found.filter((k) => wanted.has(k)).length);
		assert.ok(onMaster.every((n) => n > 0), `sessions on every master: ${onMaster.join(", ")}`);
		assert.equal(onMaster.reduce((a, b) => a + b, 0), keys.length);

		assert.deepEqual((await store.listBySubject!(subject)).map((s) => s.key).sort(), [...keys].sort());
		assert.ok((await store.count!()) >= keys.length, "count adds up every master");
		assert.equal(await store.deleteBySubject!(subject), keys.length);
		for (const key of keys) assert.equal(await store.get(key), null);
		assert.deepEqual(await store.listBySubject!(subject), []);
	});
});
