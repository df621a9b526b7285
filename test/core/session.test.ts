import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { createSessions, SessionCodecError, SessionUsageError } from "sessionkit";
import { memoryStore } from "sessionkit/stores/memory";
import { cookieOf, request } from "../helpers/round.js";

interface AppData {
	userId: number;
	name: string;
	visits: number;
	tags: string[];
}

function setup() {
	return createSessions<AppData>({ store: memoryStore({ sweepInterval: 0 }) });
}

describe("Session data", () => {
	it("get/set/has/delete/clear/all behave like a typed map", async () => {
		const sessions = setup();
		const { session } = await request(sessions, undefined, (s) => {
			assert.equal(s.get("userId"), undefined);
			assert.equal(s.has("userId"), false);
			s.set("userId", 1);
			s.set("userId", 2);
			s.set("name", "Ann");
			assert.equal(s.get("userId"), 2);
			assert.equal(s.has("name"), true);
			assert.equal(s.delete("name"), true);
			assert.equal(s.delete("name"), false);
			assert.deepEqual(s.all(), { userId: 2 });
			s.set("tags", ["a"]);
			s.clear();
			assert.deepEqual(s.all(), {});
			s.set("userId", 3);
		});
		assert.equal(session.get("userId"), 3);
	});

	it("all() returns a copy: changing it does not change the session", async () => {
		const sessions = setup();
		await request(sessions, undefined, (s) => {
			s.set("name", "Ann");
			const copy = s.all() as Record<string, unknown>;
			copy.name = "Bob";
			assert.equal(s.get("name"), "Ann");
		});
	});

	it("set() keeps a snapshot: later changes to the object are not stored until set again", async () => {
		const sessions = setup();
		const tags = ["a"];
		const first = await request(sessions, undefined, (s) => s.set("tags", tags));
		tags.push("b");
		const { session } = await request(sessions, cookieOf(first.setCookie));
		assert.deepEqual(session.get("tags"), ["a"]);
		await request(sessions, undefined, (s) => {
			const mine = ["x"];
			s.set("tags", mine);
			mine.push("y");
			assert.deepEqual(s.get("tags"), ["x"], "the same request reads what was set, as the next one will");
			assert.deepEqual(s.all().tags, ["x"]);
		});
	});

	it("increment and decrement numbers, starting from 0", async () => {
		const sessions = setup();
		await request(sessions, undefined, (s) => {
			assert.equal(s.increment("visits"), 1);
			assert.equal(s.increment("visits", 5), 6);
			assert.equal(s.decrement("visits"), 5);
			assert.equal(s.decrement("visits", 2.5), 2.5);
		});
	});

	it("increment refuses a non-number value or step with a clear error", async () => {
		const sessions = setup();
		await request(sessions, undefined, (s) => {
			s.set("name", "Ann");
			assert.throws(() => s.increment("name" as "visits"), (e: unknown) => e instanceof SessionUsageError && /not a number/.test(e.message));
			assert.throws(() => s.increment("visits", Number.NaN), SessionUsageError);
			assert.throws(() => s.decrement("visits", "2" as unknown as number), SessionUsageError);
			s.set("visits", Number.MAX_VALUE);
			// Infinity would be stored as text no request could read back.
			assert.throws(() => s.increment("visits", Number.MAX_VALUE), (e: unknown) => e instanceof SessionUsageError && /finite/.test(e.message));
			assert.equal(s.get("visits"), Number.MAX_VALUE, "the refused increment changed nothing");
		});
	});

	it("refuses names and subjects that some stores cannot keep: a NUL or an unpaired surrogate", async () => {
		const sessions = createSessions();
		await request(sessions, undefined, (s) => {
			for (const name of ["a\u0000b", "draft\ud800", "\udc00x"]) {
				assert.throws(() => s.set(name as "name", "v"), (e: unknown) => e instanceof SessionUsageError && /NUL or an unpaired surrogate/.test(e.message));
				assert.throws(() => s.flash(name, "v"), SessionUsageError);
				assert.throws(() => {
					s.subject = name;
				}, SessionUsageError);
			}
			s.set("emoji 😀" as "name", "ok");
			assert.equal(s.get("emoji 😀" as "name"), "ok", "a paired surrogate is an ordinary character");
		});
	});

	it("clear() of a new, empty session is a no-op: no record, no cookie", async () => {
		const store = memoryStore({ sweepInterval: 0 });
		const sessions = createSessions({ store });
		const { setCookie } = await request(sessions, undefined, (s) => s.clear());
		assert.equal(setCookie, null);
		assert.equal(store.size, 0);
	});

	it("refuses undefined values, empty keys and prototype-polluting keys", async () => {
		const sessions = createSessions();
		await request(sessions, undefined, (s) => {
			assert.throws(() => s.set("a", undefined), SessionUsageError);
			assert.throws(() => s.set("", 1), SessionUsageError);
			assert.throws(() => s.set("__proto__", { isAdmin: true }), SessionUsageError);
			assert.throws(() => s.set("constructor", 1), SessionUsageError);
			assert.throws(() => s.set("f", () => 1), SessionCodecError);
			assert.equal(s.has("f"), false, "a refused value is not stored");
		});
	});

	it("stored keys: delete, re-set and clear in a later request are seen at once and stored", async () => {
		const sessions = setup();
		const first = await request(sessions, undefined, (s) => {
			s.set("userId", 7);
			s.set("name", "Ann");
			s.set("tags", ["x"]);
		});
		const cookie = cookieOf(first.setCookie);
		await request(sessions, cookie, (s) => {
			assert.equal(s.has("name"), true);
			assert.equal(s.delete("name"), true);
			assert.equal(s.has("name"), false);
			assert.equal(s.get("name"), undefined);
			assert.equal(s.delete("name"), false);
			assert.deepEqual(s.all(), { userId: 7, tags: ["x"] });
			s.set("userId", 8);
			assert.deepEqual(s.all(), { userId: 8, tags: ["x"] });
		});
		const second = await request(sessions, cookie, (s) => {
			assert.deepEqual(s.all(), { userId: 8, tags: ["x"] });
			s.delete("tags");
			s.set("tags", ["y"]);
			assert.deepEqual(s.get("tags"), ["y"]);
		});
		assert.equal(second.setCookie, null, "an existing session keeps its cookie");
		await request(sessions, cookie, (s) => {
			assert.deepEqual(s.all(), { userId: 8, tags: ["y"] });
			s.clear();
			assert.equal(s.has("userId"), false);
			assert.equal(s.get("tags"), undefined);
			s.set("name", "Bob");
			assert.deepEqual(s.all(), { name: "Bob" });
		});
		const { session } = await request(sessions, cookie);
		assert.deepEqual(session.all(), { name: "Bob" });
	});

	it("persists data between requests", async () => {
		const sessions = setup();
		const first = await request(sessions, undefined, (s) => {
			s.set("userId", 7);
			s.set("tags", ["x", "y"]);
		});
		const { session } = await request(sessions, cookieOf(first.setCookie));
		assert.equal(session.isNew, false);
		assert.equal(session.get("userId"), 7);
		assert.deepEqual(session.get("tags"), ["x", "y"]);
	});
});

describe("flash messages", () => {
	it("are read once, on the next request", async () => {
		const sessions = createSessions();
		const first = await request(sessions, undefined, (s) => {
			s.flash("notice", "Saved");
			assert.equal(s.hasFlash("notice"), false, "not readable in the request that set it");
		});
		const cookie = cookieOf(first.setCookie);
		await request(sessions, cookie, (s) => {
			assert.equal(s.hasFlash(), true);
			assert.equal(s.peekFlash("notice"), "Saved");
			assert.equal(s.flash("notice"), "Saved");
			assert.equal(s.flash("notice"), undefined);
		});
		await request(sessions, cookie, (s) => assert.equal(s.hasFlash("notice"), false));
	});

	it("with { now: true } are readable in the current request, and gone once read", async () => {
		const sessions = createSessions();
		const first = await request(sessions, undefined, (s) => {
			s.set("k", 1);
			s.flash("now", "here", { now: true });
			assert.equal(s.flash("now"), "here");
		});
		await request(sessions, cookieOf(first.setCookie), (s) => assert.equal(s.hasFlash("now"), false));
	});

	it("with { now: true }, once read, also end the stored message they replaced", async () => {
		const sessions = createSessions();
		const cookie = cookieOf((await request(sessions, undefined, (s) => s.flash("notice", "Saved (request 1)"))).setCookie);
		await request(sessions, cookie, (s) => {
			s.flash("notice", "Deleted (request 2)", { now: true });
			assert.equal(s.flash("notice"), "Deleted (request 2)");
		});
		await request(sessions, cookie, (s) => assert.equal(s.flash("notice"), undefined));
	});

	it("with { now: true } but unread stay for the next request", async () => {
		const sessions = createSessions();
		const first = await request(sessions, undefined, (s) => s.flash("later", { n: 1 }, { now: true }));
		await request(sessions, cookieOf(first.setCookie), (s) => assert.deepEqual(s.flash("later"), { n: 1 }));
	});

	it("flashes() returns and clears them all; values of any codec type", async () => {
		const sessions = createSessions();
		const when = new Date("2026-05-05T00:00:00Z");
		const first = await request(sessions, undefined, (s) => {
			s.flash("a", 1);
			s.flash("b", when);
		});
		const cookie = cookieOf(first.setCookie);
		await request(sessions, cookie, (s) => assert.deepEqual(s.flashes(), { a: 1, b: when }));
		await request(sessions, cookie, (s) => assert.deepEqual(s.flashes(), {}));
	});

	it("a new flash under a key read in the same request survives for the next one", async () => {
		const sessions = createSessions();
		const cookie = cookieOf((await request(sessions, undefined, (s) => s.flash("m", "first"))).setCookie);
		await request(sessions, cookie, (s) => {
			assert.equal(s.flash("m"), "first");
			s.flash("m", "second");
		});
		await request(sessions, cookie, (s) => assert.equal(s.flash("m"), "second"));
	});
});

describe("metadata", () => {
	it("id is the public store key, null until first saved; isNew, createdAt and expiresAt", async () => {
		const sessions = createSessions({ idleTimeout: 600 });
		const first = await request(sessions, undefined, (s) => {
			assert.equal(s.id, null);
			assert.equal(s.isNew, true);
			s.set("a", 1);
		});
		assert.match(first.session.id!, /^[0-9a-f]{64}$/);
		assert.ok(!first.setCookie!.includes(first.session.id!), "the cookie holds the token, not the id");
		const { session } = await request(sessions, cookieOf(first.setCookie));
		assert.equal(session.id, first.session.id);
		assert.equal(session.isNew, false);
		assert.equal(session.createdAt, first.session.createdAt);
		assert.ok(session.expiresAt > Date.now() + 590_000 && session.expiresAt <= Date.now() + 600_000);
	});

	it("subject is validated", async () => {
		const sessions = createSessions();
		await request(sessions, undefined, (s) => {
			assert.throws(() => {
				s.subject = "";
			}, SessionUsageError);
			s.subject = "user-1";
			assert.equal(s.subject, "user-1");
		});
	});
});
