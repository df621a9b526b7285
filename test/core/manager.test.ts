import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { createSessions, SessionStoreError, SessionUsageError } from "sessionkit";
import type { Session, SessionEvent, SessionManager, SessionStore } from "sessionkit";
import { cookieStore } from "sessionkit/stores/cookie";
import { memoryStore } from "sessionkit/stores/memory";
import { testClock } from "../helpers/clock.js";
import { countingStore } from "../helpers/counting-store.js";
import { cookieOf, request } from "../helpers/round.js";

function setup(options: { idleTimeout?: number; absoluteTimeout?: number; touchAfter?: number; persist?: boolean } = {}) {
	const clock = testClock();
	// The store's own clock stands still, as a backend whose reaping lags would: what these
	// tests see is the manager's expiry check, not the store's.
	const storeClock = testClock();
	const counted = countingStore(memoryStore({ sweepInterval: 0, clock: storeClock }));
	const events: SessionEvent[] = [];
	const sessions = createSessions({
		store: counted.store,
		clock,
		idleTimeout: options.idleTimeout ?? 1800,
		absoluteTimeout: options.absoluteTimeout ?? 86400,
		touchAfter: options.touchAfter ?? 60,
		cookie: { persist: options.persist ?? false },
		onEvent: (e) => events.push(e),
	});
	return { sessions, clock, storeClock, calls: counted.calls, reset: counted.reset, events };
}

/**
 * A read-only request due a touch (120 s on) commits after a parallel request renewed the
 * session: it must send no cookie, whose old token would replace the renewed one in the
 * browser and log the user out. Returns the renewing request.
 */
async function slowTouchAfterRenew(sessions: SessionManager, clock: { advance(seconds: number): void }, cookie: string) {
	clock.advance(120);
	const slow = await sessions.load(cookie);
	slow.get("a");
	const login = await request(sessions, cookie, (s) => s.renew());
	const late = await sessions.commit(slow, { secure: false });
	assert.equal(late.setCookie, null, "the old token would replace the renewed cookie and log the user out");
	return login;
}

describe("one request", () => {
	it("without a cookie makes no store call, and an untouched new session sets no cookie", async () => {
		const { sessions, calls } = setup();
		const { setCookie } = await request(sessions, undefined, (s) => s.get("anything"));
		assert.equal(setCookie, null);
		assert.deepEqual(calls, {});
	});

	it("with a cookie costs exactly one store round trip to load, and none to commit when nothing changed", async () => {
		const { sessions, calls, reset } = setup();
		const cookie = cookieOf((await request(sessions, undefined, (s) => s.set("a", 1))).setCookie);
		reset();
		const { setCookie } = await request(sessions, cookie, (s) => s.get("a"));
		assert.deepEqual(calls, { get: 1 });
		assert.equal(setCookie, null, "no Set-Cookie for a read-only request");
	});

	it("that never uses its session costs no store call and no write, even with a cookie and a touch due", async () => {
		const { sessions, clock, calls, reset } = setup({ idleTimeout: 600, touchAfter: 60 });
		const cookie = cookieOf((await request(sessions, undefined, (s) => s.set("a", 1))).setCookie);
		reset();
		clock.advance(300);
		const { setCookie } = await request(sessions, cookie, () => {});
		assert.deepEqual(calls, {});
		assert.equal(setCookie, null);
		clock.advance(200);
		assert.equal((await request(sessions, cookie)).session.get("a"), 1, "an unused request did not count as activity, but did not end the session");
	});

	it("refuses a second commit of one session, which would apply its changes again", async () => {
		const { sessions } = setup();
		const cookie = cookieOf((await request(sessions, undefined, (s) => s.set("n", 1))).setCookie);
		const session = await sessions.load(cookie);
		session.increment("n");
		await sessions.commit(session, { secure: false });
		assert.throws(() => sessions.commit(session, { secure: false }), SessionUsageError);
		assert.equal((await request(sessions, cookie)).session.get("n"), 2, "one increment, counted once");
	});

	it("with a new session whose changes cancel out writes nothing and sets no cookie, with either kind of store", async () => {
		const handlers: Array<(s: Session) => void> = [
			(s) => {
				s.set("a", 1);
				s.delete("a");
			},
			(s) => {
				// A failed login's error, shown at once and read.
				s.flash("error", "Wrong password", { now: true });
				assert.equal(s.flash("error"), "Wrong password");
			},
			(s) => {
				s.increment("n");
				s.clear();
			},
		];
		const memory = memoryStore({ sweepInterval: 0 });
		for (const store of [memory, cookieStore({ secrets: ["0123456789abcdef0123456789abcdef"] })]) {
			const events: SessionEvent[] = [];
			const sessions = createSessions({ store, onEvent: (e) => events.push(e) });
			for (const handler of handlers) assert.equal((await request(sessions, undefined, handler)).setCookie, null, `${store.name}: ${String(handler)}`);
			assert.deepEqual(events, [], `${store.name}: no session was created`);
			const cookie = cookieOf((await request(sessions, undefined, (s) => s.set("a", 1))).setCookie);
			const logout = await request(sessions, cookie, (s) => {
				s.destroy();
				s.set("b", 2);
				s.delete("b");
			});
			assert.match(logout.setCookie!, /Max-Age=0/, `${store.name}: a destroy() whose fresh session is left empty only expires the cookie`);
		}
		assert.equal(memory.size, 0);
	});

	it("refuses, with SessionUsageError, every change made after the commit started, and still reads", async () => {
		const { sessions } = setup();
		const cookie = cookieOf((await request(sessions, undefined, (s) => s.set("a", 1))).setCookie);
		await request(sessions, cookie, (s) => s.flash("notice", "hi"));
		const { session } = await request(sessions, cookie, (s) => s.get("a"));
		const changes: Array<[string, () => unknown]> = [
			["set", () => session.set("a", 2)],
			["delete", () => session.delete("a")],
			["clear", () => session.clear()],
			["increment", () => session.increment("a")],
			["flash", () => session.flash("later", "x")],
			["flash read, which removes it", () => session.flash("notice")],
			["flashes", () => session.flashes()],
			["renew", () => session.renew()],
			["destroy", () => session.destroy()],
			["subject", () => (session.subject = "user-1")],
		];
		for (const [name, change] of changes) assert.throws(change, SessionUsageError, name);
		assert.equal(session.get("a"), 1);
		assert.equal(session.peekFlash("notice"), "hi");
		assert.equal((await request(sessions, cookie)).session.get("a"), 1, "nothing changed in the store");
	});

	it("refuses the read of a { now: true } flash after the commit, which could no longer remove it", async () => {
		const { sessions } = setup();
		const reads: Array<[string, (s: Session) => unknown]> = [
			["flash(key)", (s) => s.flash("notice")],
			["flashes()", (s) => s.flashes()],
		];
		for (const [name, read] of reads) {
			const session = await sessions.load(undefined);
			session.set("a", 1);
			session.flash("notice", "Saved", { now: true });
			const cookie = cookieOf((await sessions.commit(session, { secure: false })).setCookie);
			assert.throws(() => read(session), SessionUsageError, name);
			assert.equal(session.peekFlash("notice"), "Saved", `${name}: still readable with peekFlash`);
			assert.equal((await request(sessions, cookie, (s) => s.flash("notice"))).result, "Saved", `${name}: shown in the next request`);
		}
		const read = await sessions.load(undefined);
		read.set("a", 1);
		read.flash("notice", "Saved", { now: true });
		assert.equal(read.flash("notice"), "Saved");
		await sessions.commit(read, { secure: false });
		assert.equal(read.flash("notice"), undefined, "a message read before the commit is gone: reading again changes nothing");
		assert.deepEqual(read.flashes(), {});
	});

	it("discard drops the changes so far, and commits the changes made after it", async () => {
		const { sessions } = setup();
		const cookie = cookieOf((await request(sessions, undefined, (s) => s.set("a", 1))).setCookie);
		const { setCookie } = await request(sessions, cookie, (s) => {
			s.set("a", 2);
			s.renew();
			sessions.discard(s);
			assert.equal(s.get("a"), 1, "back to the session as loaded");
			s.set("b", 3);
		});
		assert.equal(setCookie, null, "the renew was dropped too: same token");
		const { session } = await request(sessions, cookie);
		assert.deepEqual(session.all(), { a: 1, b: 3 });
	});

	it("discard drops the changes but not the activity: a touch that is due still extends the idle deadline", async () => {
		const { sessions, clock, calls, reset } = setup({ idleTimeout: 600, touchAfter: 60 });
		const cookie = cookieOf((await request(sessions, undefined, (s) => s.set("a", 1))).setCookie);
		clock.advance(120);
		reset();
		const failed = await request(sessions, cookie, (s) => {
			s.set("a", 2);
			s.destroy();
			sessions.discard(s);
		});
		assert.deepEqual(calls, { get: 1, touch: 1 }, "a touch, and no write of the dropped changes");
		assert.equal(failed.setCookie, null);
		clock.advance(550); // past the deadline as loaded (600 s), within the touched one (720 s)
		assert.equal((await request(sessions, cookie)).session.get("a"), 1);
		reset();
		clock.advance(30);
		await request(sessions, cookie, (s) => {
			s.set("a", 3);
			sessions.discard(s);
		});
		assert.deepEqual(calls, { get: 1 }, "no touch before touchAfter, as for a request that only reads");
	});

	it("writes a modified session with one merge and no new cookie", async () => {
		const { sessions, calls, reset } = setup();
		const cookie = cookieOf((await request(sessions, undefined, (s) => s.set("a", 1))).setCookie);
		reset();
		const { setCookie } = await request(sessions, cookie, (s) => s.increment("a"));
		assert.deepEqual(calls, { get: 1, merge: 1 });
		assert.equal(setCookie, null);
	});

	it("extends the idle deadline with a cheap touch, at most once per touchAfter", async () => {
		const { sessions, clock, calls, reset } = setup({ idleTimeout: 600, touchAfter: 60 });
		const cookie = cookieOf((await request(sessions, undefined, (s) => s.set("a", 1))).setCookie);
		reset();
		clock.advance(30);
		await request(sessions, cookie);
		assert.equal(calls.touch, undefined, "no touch within touchAfter");
		clock.advance(40);
		await request(sessions, cookie);
		assert.equal(calls.touch, 1);
		clock.advance(10);
		await request(sessions, cookie);
		assert.equal(calls.touch, 1, "throttled again");
		assert.equal(calls.merge ?? 0, 0);
		assert.equal(calls.set ?? 0, 0);
	});
});

describe("expiry", () => {
	it("ends a session idle for longer than idleTimeout, and deletes it", async () => {
		const { sessions, clock, events, calls } = setup({ idleTimeout: 600 });
		const cookie = cookieOf((await request(sessions, undefined, (s) => s.set("a", 1))).setCookie);
		clock.advance(599);
		assert.equal((await request(sessions, cookie)).session.get("a"), 1, "still alive just before");
		clock.advance(601);
		const { session } = await request(sessions, cookie);
		assert.equal(session.isNew, true);
		assert.equal(session.get("a"), undefined);
		assert.ok(calls.delete! >= 0);
		assert.ok(events.some((e) => e.type === "session-expired"));
	});

	it("slides the idle deadline while the session is used", async () => {
		const { sessions, clock } = setup({ idleTimeout: 600, touchAfter: 60 });
		const cookie = cookieOf((await request(sessions, undefined, (s) => s.set("a", 1))).setCookie);
		for (let i = 0; i < 10; i++) {
			clock.advance(300);
			assert.equal((await request(sessions, cookie)).session.get("a"), 1, `alive after ${(i + 1) * 300} s of use`);
		}
	});

	it("ends a session at its absolute lifetime however much it is used", async () => {
		const { sessions, clock, events } = setup({ idleTimeout: 600, absoluteTimeout: 3600, touchAfter: 0 });
		const cookie = cookieOf((await request(sessions, undefined, (s) => s.set("a", 1))).setCookie);
		for (let elapsed = 0; elapsed < 3500; elapsed += 500) {
			clock.advance(500);
			await request(sessions, cookie, (s) => s.increment("a"));
		}
		clock.advance(200);
		assert.equal((await request(sessions, cookie)).session.isNew, true);
		assert.ok(events.some((e) => e.type === "session-expired" && e.reason === "absolute"));
	});

	it("runs onDestroy callbacks for an expired session", async () => {
		const { sessions, clock } = setup({ idleTimeout: 600 });
		const seen: string[] = [];
		sessions.onDestroy((s) => {
			seen.push(s.reason);
		});
		const cookie = cookieOf((await request(sessions, undefined, (s) => s.set("a", 1))).setCookie);
		clock.advance(700);
		await request(sessions, cookie);
		assert.deepEqual(seen, ["expired"]);
	});
});

describe("renew", () => {
	it("gives a new token, keeps data and flash, and the old token stops working at once", async () => {
		const { sessions, events } = setup();
		const first = await request(sessions, undefined, (s) => {
			s.set("cart", ["x"]);
			s.flash("notice", "hi");
		});
		const oldCookie = cookieOf(first.setCookie);
		const renewed = await request(sessions, oldCookie, (s) => {
			s.renew();
			s.set("authenticated", true);
		});
		const newCookie = cookieOf(renewed.setCookie);
		assert.notEqual(newCookie, oldCookie);
		assert.notEqual(renewed.session.id, first.session.id);
		assert.equal((await request(sessions, oldCookie)).session.isNew, true);
		const { session } = await request(sessions, newCookie);
		assert.deepEqual(session.get("cart"), ["x"]);
		assert.equal(session.get("authenticated"), true);
		assert.equal(session.peekFlash("notice"), "hi");
		assert.ok(events.some((e) => e.type === "session-renewed" && e.previousId === first.session.id));
	});

	it("a parallel request that commits after the renew sets no cookie, so it cannot log the browser out", async () => {
		const { sessions, events } = setup();
		const cookie = cookieOf((await request(sessions, undefined, (s) => s.set("cart", ["x"]))).setCookie);
		const slow = await sessions.load(cookie);
		slow.get("cart"); // the slow request has read the session before the login renews it
		const login = await request(sessions, cookie, (s) => {
			s.renew();
			s.set("authenticated", true);
		});
		slow.set("lastPage", "/shop");
		const late = await sessions.commit(slow, { secure: false });
		assert.equal(late.setCookie, null, "no expired cookie that would replace the renewed one");
		assert.ok(events.some((e) => e.type === "session-lost"));
		const { session } = await request(sessions, cookieOf(login.setCookie));
		assert.equal(session.get("authenticated"), true, "the renewed session is intact");
		assert.equal(session.get("lastPage"), undefined, "the lost write did not land anywhere");
	});

	it("that commits after a parallel logout does not bring the session back under its new token", async () => {
		const { sessions, events } = setup();
		const ended: string[] = [];
		sessions.onDestroy((s) => void ended.push(s.reason));
		const cookie = cookieOf((await request(sessions, undefined, (s) => s.set("role", "admin"))).setCookie);
		const slow = await sessions.load(cookie);
		slow.renew(); // a login, still running
		await request(sessions, cookie, (s) => s.destroy()); // the logout in another tab lands first
		const late = await sessions.commit(slow, { secure: false });
		assert.equal(late.setCookie, null, "no cookie for a session that was ended");
		assert.ok(events.some((e) => e.type === "session-lost" && e.reason === "destroyed-concurrently"));
		assert.equal(await sessions.count(), 0, "nothing is left under the new key");
		assert.deepEqual(ended, ["destroyed"]);
	});

	it("that commits after destroyBySubject leaves no live session of that subject", async () => {
		const { sessions } = setup();
		const cookie = cookieOf(
			(
				await request(sessions, undefined, (s) => {
					s.subject = "u8";
					s.set("a", 1);
				})
			).setCookie,
		);
		const slow = await sessions.load(cookie);
		slow.renew();
		assert.equal(await sessions.destroyBySubject("u8"), 1);
		assert.equal((await sessions.commit(slow, { secure: false })).setCookie, null);
		assert.deepEqual(await sessions.listBySubject("u8"), []);
	});

	it("that commits while destroyBySubject runs leaves no live session of that subject, wherever the logout lands", async () => {
		// The logout runs before the commit's first store call, then before its second, and so on,
		// then after the commit: with a store whose deleteBySubject is atomic, none leaves a session.
		for (let at = 0; ; at++) {
			let armed = false;
			let landed = false;
			let seen = 0;
			const inner = memoryStore({ sweepInterval: 0 });
			const store = new Proxy(inner, {
				get(target, property, receiver) {
					if (property === "synchronous") return false;
					const value = Reflect.get(target, property, receiver);
					if (typeof value !== "function") return value;
					return async (...args: unknown[]) => {
						if (armed && seen++ === at) {
							armed = false;
							landed = true;
							await sessions.destroyBySubject("u8");
						}
						return value.apply(target, args);
					};
				},
			});
			const sessions = createSessions({ store });
			const made = await request(sessions, undefined, (s) => {
				s.subject = "u8";
				s.set("a", 1);
			});
			const slow = await sessions.load(cookieOf(made.setCookie));
			slow.renew();
			slow.set("b", 2);
			armed = true;
			const { setCookie } = await sessions.commit(slow, { secure: false });
			if (!landed) await sessions.destroyBySubject("u8");
			assert.deepEqual(await sessions.listBySubject("u8"), [], `logout before store call ${at} of the commit`);
			assert.equal(await sessions.count(), 0, `logout before store call ${at}`);
			if (landed && at < 2) assert.equal(setCookie, null, `logout before store call ${at}: no cookie for a session already ended`);
			if (!landed) break;
		}
	});

	it("that commits while a two-step destroyBySubject runs (as Redis's: list, then delete) leaves no live session", async () => {
		const inner = memoryStore({ sweepInterval: 0 });
		let listed!: () => void;
		const keysRead = new Promise<void>((resolve) => (listed = resolve));
		let release!: () => void;
		const deleting = new Promise<void>((resolve) => (release = resolve));
		const store: SessionStore = {
			...inner,
			name: "two-step",
			synchronous: false,
			// One step reads the subject's keys, a later one deletes them: a session renewed in between is not among them.
			async deleteBySubject(subject) {
				const keys = inner.listBySubject!(subject).map((session) => session.key);
				listed();
				await deleting;
				for (const key of keys) inner.delete(key);
				return keys.length;
			},
		};
		const sessions = createSessions({ store });
		const ended: string[] = [];
		sessions.onDestroy((s) => void ended.push(s.id));
		const made = await request(sessions, undefined, (s) => {
			s.subject = "u8";
			s.set("a", 1);
		});
		const slow = await sessions.load(cookieOf(made.setCookie));
		slow.renew();
		const logout = sessions.destroyBySubject("u8");
		await keysRead;
		const renewed = await sessions.commit(slow, { secure: false }); // writes the new key, finds the old one still live
		release();
		await logout;
		assert.deepEqual(await sessions.listBySubject("u8"), [], "log out everywhere leaves no session of u8");
		assert.equal((await request(sessions, cookieOf(renewed.setCookie))).session.isNew, true, "the renewed token leads nowhere");
		assert.deepEqual(ended.sort(), [made.session.id!, slow.id!].sort(), "onDestroy hears of the session under both its ids, once each");
	});

	it("then destroy in the same request ends the session, and onDestroy hears of it", async () => {
		const { sessions } = setup();
		const ended: string[] = [];
		sessions.onDestroy((s) => void ended.push(`${s.reason}:${s.subject}`));
		const cookie = cookieOf(
			(
				await request(sessions, undefined, (s) => {
					s.subject = "alice";
					s.set("a", 1);
				})
			).setCookie,
		);
		const { setCookie } = await request(sessions, cookie, (s) => {
			s.renew();
			s.destroy();
		});
		assert.match(setCookie!, /Max-Age=0/);
		assert.deepEqual(ended, ["destroyed:alice"]);
		assert.equal(await sessions.count(), 0);
	});

	it("on a brand-new session simply creates it", async () => {
		const { sessions } = setup();
		const { setCookie, session } = await request(sessions, undefined, (s) => s.renew());
		assert.ok(setCookie);
		assert.equal((await request(sessions, cookieOf(setCookie))).session.id, session.id);
	});
});

describe("destroy", () => {
	it("deletes the record and expires the cookie", async () => {
		const { sessions } = setup();
		const cookie = cookieOf((await request(sessions, undefined, (s) => s.set("a", 1))).setCookie);
		const { setCookie } = await request(sessions, cookie, (s) => s.destroy());
		assert.match(setCookie!, /^sid=; Max-Age=0/);
		assert.equal((await request(sessions, cookie)).session.isNew, true);
	});

	it("writes after destroy start a fresh session with a new token", async () => {
		const { sessions } = setup();
		const first = await request(sessions, undefined, (s) => s.set("a", 1));
		const cookie = cookieOf(first.setCookie);
		const second = await request(sessions, cookie, (s) => {
			s.destroy();
			assert.equal(s.isNew, true);
			assert.equal(s.get("a"), undefined);
			s.set("b", 2);
		});
		const fresh = cookieOf(second.setCookie);
		assert.notEqual(fresh, cookie);
		assert.notEqual(second.session.id, first.session.id);
		const { session } = await request(sessions, fresh);
		assert.deepEqual(session.all(), { b: 2 });
		assert.equal((await request(sessions, cookie)).session.isNew, true);
	});

	it("tells onDestroy the subject the session was stored under, not one assigned in the same request", async () => {
		const { sessions } = setup();
		const ended: Array<string | null> = [];
		sessions.onDestroy((s) => void ended.push(s.subject));
		const cookie = cookieOf((await request(sessions, undefined, (s) => void (s.subject = "alice"))).setCookie);
		await request(sessions, cookie, (s) => {
			s.subject = "bob";
			s.destroy();
		});
		assert.deepEqual(ended, ["alice"]);
	});

	it("of a session that was never stored just expires the cookie", async () => {
		const { sessions, calls } = setup();
		const { setCookie } = await request(sessions, undefined, (s) => s.destroy());
		assert.match(setCookie!, /Max-Age=0/);
		assert.deepEqual(calls, {});
	});
});

describe("onDestroy", () => {
	/** `inner` as a store on a server answers: every call a promise, so parallel requests interleave. */
	function answeringLater(inner: SessionStore): SessionStore {
		return new Proxy(inner, {
			get(target, property, receiver) {
				if (property === "synchronous") return false;
				const value = Reflect.get(target, property, receiver);
				return typeof value === "function" ? async (...args: unknown[]) => value.apply(target, args) : value;
			},
		});
	}

	async function aliceLoggedIn(sessions: SessionManager) {
		const made = await request(sessions, undefined, (s) => {
			s.subject = "alice";
			s.set("a", 1);
		});
		return { cookie: cookieOf(made.setCookie), id: made.session.id! };
	}

	function listen(sessions: SessionManager): string[] {
		const ended: string[] = [];
		sessions.onDestroy((s) => void ended.push(`${s.reason}:${s.subject}`));
		return ended;
	}

	it("hears of a session destroyed by a request during which it expired, whether the store still holds the record or reaped it", async () => {
		// The store's clock stands still (the record is still there) or moves with the app's (reaped, as a TTL does).
		for (const reaped of [false, true]) {
			const clock = testClock();
			const store = memoryStore({ sweepInterval: 0, clock: reaped ? clock : testClock() });
			const sessions = createSessions({ store, clock, idleTimeout: 60 });
			const ended = listen(sessions);
			const { cookie } = await aliceLoggedIn(sessions);
			await request(sessions, cookie, (s) => {
				s.get("a");
				clock.advance(61); // a slow handler: the idle deadline passes before the logout commits
				s.destroy();
			});
			assert.deepEqual(ended, ["destroyed:alice"], `reaped: ${reaped}`);
		}
	});

	it("hears of the sessions destroyBySubject's first pass ended even when its second pass fails", async () => {
		for (const failing of ["listBySubject", "deleteBySubject"] as const) {
			const inner = memoryStore({ sweepInterval: 0 });
			const calls = { listBySubject: 0, deleteBySubject: 0 };
			const store: SessionStore = {
				...inner,
				name: "failing-second-pass",
				listBySubject(subject) {
					if (++calls.listBySubject === 2 && failing === "listBySubject") throw new Error("store down");
					return inner.listBySubject!(subject);
				},
				deleteBySubject(subject) {
					if (++calls.deleteBySubject === 2 && failing === "deleteBySubject") throw new Error("store down");
					return inner.deleteBySubject!(subject);
				},
			};
			const sessions = createSessions({ store });
			const ended = listen(sessions);
			await aliceLoggedIn(sessions);
			await assert.rejects(sessions.destroyBySubject("alice"), SessionStoreError);
			assert.deepEqual(ended, ["by-subject:alice"], `second ${failing} failing`);
		}
	});

	it("hears once of a session the handler destroys and also logs out everywhere, in either order", async () => {
		const { sessions } = setup();
		const ended = listen(sessions);
		const first = await aliceLoggedIn(sessions);
		await request(sessions, first.cookie, async (s) => {
			s.destroy();
			await sessions.destroyBySubject("alice");
		});
		const second = await aliceLoggedIn(sessions);
		await request(sessions, second.cookie, async (s) => {
			assert.equal(s.get("a"), 1);
			await sessions.destroyBySubject("alice");
			s.destroy();
		});
		assert.deepEqual(ended, ["by-subject:alice", "by-subject:alice"]);
	});

	it("hears once of a session two parallel requests destroy (a double-clicked logout)", async () => {
		const { sessions } = setup();
		const ended = listen(sessions);
		const { cookie } = await aliceLoggedIn(sessions);
		const a = await sessions.load(cookie);
		const b = await sessions.load(cookie);
		a.destroy();
		b.destroy();
		assert.match((await sessions.commit(a, { secure: false })).setCookie!, /Max-Age=0/);
		assert.match((await sessions.commit(b, { secure: false })).setCookie!, /Max-Age=0/, "both responses still expire the cookie");
		assert.deepEqual(ended, ["destroyed:alice"]);
	});

	it("hears once of a session that two app instances sharing one store destroy", async () => {
		const store = memoryStore({ sweepInterval: 0 });
		const instances = [createSessions({ store }), createSessions({ store })];
		const ended = instances.map(listen);
		const { cookie } = await aliceLoggedIn(instances[0]!);
		const [a, b] = await Promise.all(instances.map((sessions) => sessions.load(cookie)));
		a!.destroy();
		b!.destroy();
		await instances[0]!.commit(a!, { secure: false });
		await instances[1]!.commit(b!, { secure: false });
		assert.deepEqual(ended.flat(), ["destroyed:alice"]);
	});

	it("hears once of a session ended by requests and calls running side by side, with a store that answers later", async () => {
		const clock = testClock();
		const sessions = createSessions({ store: answeringLater(memoryStore({ sweepInterval: 0, clock: testClock() })), clock, idleTimeout: 600 });
		const ended = listen(sessions);

		const logout = await aliceLoggedIn(sessions);
		const [a, b] = await Promise.all([sessions.load(logout.cookie), sessions.load(logout.cookie)]);
		a.destroy();
		b.destroy();
		await Promise.all([sessions.commit(a, { secure: false }), sessions.commit(b, { secure: false })]);
		assert.deepEqual(ended.splice(0), ["destroyed:alice"], "two logouts");

		const byId = await aliceLoggedIn(sessions);
		const c = await sessions.load(byId.cookie);
		c.destroy();
		await Promise.all([sessions.commit(c, { secure: false }), sessions.destroyById(byId.id)]);
		assert.equal(ended.splice(0).length, 1, "a logout and destroyById");

		const bySubject = await aliceLoggedIn(sessions);
		const d = await sessions.load(bySubject.cookie);
		d.destroy();
		await Promise.all([sessions.destroyBySubject("alice"), sessions.commit(d, { secure: false })]);
		assert.equal(ended.splice(0).length, 1, "a logout and destroyBySubject");

		const expired = await aliceLoggedIn(sessions);
		clock.advance(700); // the store's own clock stands still: both requests find the record, expired
		await Promise.all([request(sessions, expired.cookie), request(sessions, expired.cookie)]);
		assert.deepEqual(ended.splice(0), ["expired:alice"], "two requests that find it expired");
	});
});

describe("cookies", () => {
	it("default to HttpOnly, SameSite=Lax, Path=/, no Domain, no Max-Age, Secure only over HTTPS", async () => {
		const { sessions } = setup();
		const session = await sessions.load(undefined);
		session.set("a", 1);
		const plain = (await sessions.commit(session, { secure: false })).setCookie!;
		assert.match(plain, /^sid=[A-Za-z0-9_-]{43}; Path=\/; HttpOnly; SameSite=Lax$/);
		const overTLS = await sessions.load(undefined);
		overTLS.set("a", 1);
		assert.match((await sessions.commit(overTLS, { secure: true })).setCookie!, /; Secure/);
	});

	it("read request.secure only when a cookie is sent (adapters may pass a getter)", async () => {
		const { sessions } = setup();
		let reads = 0;
		const overTLS = {
			get secure() {
				reads++;
				return true;
			},
		};
		const created = await sessions.load(undefined);
		created.set("a", 1);
		const { setCookie } = await sessions.commit(created, overTLS);
		assert.match(setCookie!, /; Secure/);
		assert.equal(reads, 1);
		// A change to a stored session without `persist` sends no cookie: `secure` is never asked.
		const changed = await sessions.load(cookieOf(setCookie));
		changed.increment("n");
		assert.equal((await sessions.commit(changed, overTLS)).setCookie, null);
		assert.equal(reads, 1);
		const destroyed = await sessions.load(cookieOf(setCookie));
		destroyed.destroy();
		assert.match((await sessions.commit(destroyed, overTLS)).setCookie!, /Max-Age=0; .*Secure|Secure.*Max-Age=0/);
		assert.equal(reads, 2);
	});

	it("with persist carry a Max-Age that follows the idle deadline, refreshed on touch", async () => {
		const { sessions, clock } = setup({ persist: true, idleTimeout: 600, touchAfter: 60 });
		const first = await request(sessions, undefined, (s) => s.set("a", 1));
		assert.match(first.setCookie!, /Max-Age=600/);
		clock.advance(120);
		const touched = await request(sessions, cookieOf(first.setCookie));
		assert.match(touched.setCookie!, /Max-Age=600/);
	});

	it("with persist are not sent again by a touch after a parallel renew retired the token", async () => {
		const { sessions, clock, events } = setup({ persist: true, idleTimeout: 600, touchAfter: 60 });
		const cookie = cookieOf((await request(sessions, undefined, (s) => s.set("a", 1))).setCookie);
		const login = await slowTouchAfterRenew(sessions, clock, cookie);
		assert.ok(events.some((e) => e.type === "session-lost"));
		assert.equal((await request(sessions, cookieOf(login.setCookie))).session.get("a"), 1);
	});

	it("of a remembered session are not sent again by a touch after a parallel renew, with a store without merge", async () => {
		const clock = testClock();
		const { merge: _merge, ...withoutMerge } = memoryStore({ sweepInterval: 0, clock });
		const events: SessionEvent[] = [];
		const sessions = createSessions({ store: { ...withoutMerge, name: "no-merge" }, clock, idleTimeout: 600, touchAfter: 60, onEvent: (e) => events.push(e) });
		const cookie = cookieOf(
			(
				await request(sessions, undefined, (s) => {
					s.set("a", 1);
					s.rememberMe = true;
				})
			).setCookie,
		);
		const login = await slowTouchAfterRenew(sessions, clock, cookie);
		assert.equal(events.at(-1)?.type, "session-lost");
		clock.advance(120);
		const touched = await request(sessions, cookieOf(login.setCookie), (s) => assert.equal(s.get("a"), 1));
		assert.match(touched.setCookie!, /Max-Age=600/, "the touch of a live session still sends it again");
	});

	it("of a record whose rememberMe key holds a value sessionkit never writes follow the app's cookie.persist", async () => {
		const store = memoryStore({ sweepInterval: 0 });
		const sessions = createSessions({ store, idleTimeout: 600, cookie: { persist: true } });
		const made = await request(sessions, undefined, (s) => s.set("a", 1));
		const record = store.get(made.session.id!)!;
		store.set(made.session.id!, { ...record, data: { ...record.data, __sessionkit_rememberMe: "1" } }, record.idleExpiresAt);
		const { setCookie } = await request(sessions, cookieOf(made.setCookie), (s) => {
			assert.equal(s.rememberMe, true, "no choice of its own: the app's persist");
			assert.deepEqual(s.all(), { a: 1 });
			s.increment("a");
		});
		assert.match(setCookie!, /Max-Age=600/);
	});

	it("of a session that chose rememberMe carry a Max-Age, refreshed on writes and touches, in an app without persist", async () => {
		const { sessions, clock, calls, reset } = setup({ idleTimeout: 600, touchAfter: 60 });
		const anonymous = await request(sessions, undefined, (s) => s.set("cart", 1));
		assert.doesNotMatch(anonymous.setCookie!, /Max-Age/);
		const login = await request(sessions, cookieOf(anonymous.setCookie), (s) => {
			assert.equal(s.rememberMe, false, "the app's cookie.persist until the session chooses");
			s.renew();
			s.rememberMe = true;
		});
		assert.match(login.setCookie!, /Max-Age=600/);
		const cookie = cookieOf(login.setCookie);
		clock.advance(30);
		const write = await request(sessions, cookie, (s) => s.increment("cart"));
		assert.match(write.setCookie!, /Max-Age=600/, "a persistent cookie's lifetime follows the idle deadline");
		clock.advance(120);
		reset();
		const read = await request(sessions, cookie, (s) => assert.equal(s.rememberMe, true));
		assert.match(read.setCookie!, /Max-Age=600/, "a touch sends it again");
		assert.deepEqual(calls, { get: 1, merge: 1 }, "checked by an empty merge, as with cookie.persist");
		const other = await request(sessions, undefined, (s) => s.set("cart", 1));
		assert.doesNotMatch(other.setCookie!, /Max-Age/, "other sessions keep the app's default");
	});

	it("of a session that chose rememberMe = false are browser-session cookies in an app with persist", async () => {
		const { sessions, clock } = setup({ persist: true, idleTimeout: 600, touchAfter: 60 });
		const created = await request(sessions, undefined, (s) => s.set("a", 1));
		assert.match(created.setCookie!, /Max-Age=600/);
		const shared = await request(sessions, cookieOf(created.setCookie), (s) => {
			s.rememberMe = false; // "this is a shared computer"
		});
		assert.equal(cookieOf(shared.setCookie), cookieOf(created.setCookie), "the same token, sent again with its new lifetime");
		assert.doesNotMatch(shared.setCookie!, /Max-Age|Expires/);
		clock.advance(120);
		const touched = await request(sessions, cookieOf(created.setCookie), (s) => s.increment("a"));
		assert.equal(touched.setCookie, null, "a session cookie is not sent again");
	});

	it("keep the rememberMe choice through renew() and clear(), forget it on destroy(), and hide it from the data", async () => {
		const { sessions } = setup({ idleTimeout: 600 });
		const first = await request(sessions, undefined, (s) => {
			s.set("a", 1);
			s.rememberMe = true;
		});
		let cookie = cookieOf(first.setCookie);
		const renewed = await request(sessions, cookie, (s) => s.renew());
		assert.match(renewed.setCookie!, /Max-Age=600/);
		cookie = cookieOf(renewed.setCookie);
		await request(sessions, cookie, (s) => s.clear());
		const seen = await request(sessions, cookie, (s) => {
			assert.equal(s.rememberMe, true, "clear() removes data, not the cookie's lifetime");
			assert.deepEqual(s.all(), {});
			assert.equal(s.has("__sessionkit_rememberMe"), false);
			assert.equal(s.get("__sessionkit_rememberMe"), undefined);
			assert.equal(s.delete("__sessionkit_rememberMe"), false);
			assert.throws(() => s.set("__sessionkit_rememberMe", "false"), SessionUsageError);
		});
		assert.equal(seen.setCookie, null);
		const destroyed = await request(sessions, cookie, (s) => {
			s.destroy();
			s.set("b", 2);
			assert.equal(s.rememberMe, false);
		});
		assert.doesNotMatch(destroyed.setCookie!, /Max-Age/, "the fresh session after destroy() follows the app's default");
	});

	it("are not written nor sent again when rememberMe is assigned the value it has, as with subject", async () => {
		for (const persist of [false, true]) {
			const { sessions, calls, reset } = setup({ persist });
			const fresh = await request(sessions, undefined, (s) => {
				s.rememberMe = persist; // a login form's unticked (or, with persist, ticked) box
			});
			assert.equal(fresh.setCookie, null, `persist ${persist}: a new session that only restates the default is not stored`);
			assert.deepEqual(calls, {});
			const cookie = cookieOf((await request(sessions, undefined, (s) => s.set("a", 1))).setCookie);
			reset();
			const same = await request(sessions, cookie, (s) => {
				s.rememberMe = persist;
			});
			assert.deepEqual(calls, { get: 1 }, `persist ${persist}: no write`);
			assert.equal(same.setCookie, null);
			const chosen = await request(sessions, cookie, (s) => {
				s.rememberMe = !persist;
				s.rememberMe = !persist;
			});
			assert.ok(chosen.setCookie, "a new value is still sent");
			reset();
			await request(sessions, cookie, (s) => {
				s.rememberMe = !persist;
			});
			assert.deepEqual(calls, { get: 1 }, `persist ${persist}: the stored choice restated: no write`);
		}
	});

	it("refuse a rememberMe that is not a boolean, and one assigned after the commit", async () => {
		const { sessions } = setup();
		const session = await sessions.load(undefined);
		assert.throws(() => {
			(session as { rememberMe: unknown }).rememberMe = "yes";
		}, SessionUsageError);
		await sessions.commit(session, { secure: false });
		assert.throws(() => {
			session.rememberMe = true;
		}, SessionUsageError);
	});

	it("ignore a malformed, unknown or duplicated cookie, which never reaches the store", async () => {
		const { sessions, calls, events } = setup();
		for (const cookie of ["sid=not-a-token", `sid=${"A".repeat(42)}`, "sid=../../etc/passwd", `sid=${"A".repeat(43)}; sid=${"B".repeat(43)}`, `sid=${"x".repeat(5000)}`]) {
			const { session } = await request(sessions, cookie);
			assert.equal(session.isNew, true, cookie.slice(0, 50));
		}
		assert.deepEqual(calls, {}, "no store call for a cookie that is not a well-formed token");
		assert.deepEqual(events.map((e) => e.type), Array(5).fill("cookie-rejected"));
		await request(sessions, `sid=${"A".repeat(43)}`);
		assert.equal(calls.get, 1, "a well-formed but unknown token costs one lookup");
		assert.equal(events.at(-1)?.type, "session-unknown");
	});
});

describe("store failures", () => {
	const failing = (operation: keyof SessionStore): SessionStore => {
		const inner = memoryStore({ sweepInterval: 0 });
		return {
			...inner,
			name: "flaky",
			synchronous: false,
			[operation]: async () => {
				throw new Error("connection refused");
			},
		} as SessionStore;
	};

	it("fail the load with a typed error naming the store, the driver error as cause", async () => {
		const events: SessionEvent[] = [];
		const sessions = createSessions({ store: failing("get"), onEvent: (e) => events.push(e) });
		await assert.rejects(async () => sessions.load(`sid=${"A".repeat(43)}`), (error: unknown) => {
			assert.ok(error instanceof SessionStoreError);
			assert.equal(error.store, "flaky");
			assert.equal(error.code, "SESSION_STORE");
			assert.match(error.message, /^sessionkit\/flaky: get failed: connection refused/);
			assert.equal((error.cause as Error).message, "connection refused");
			return true;
		});
		assert.equal(events[0]?.type, "store-error");
	});

	it("with a synchronous store, fail the first use of the session with the same typed error", async () => {
		const inner = memoryStore({ sweepInterval: 0 });
		const store = { ...inner, name: "flaky-sync", get: () => { throw new Error("disk on fire"); } } as SessionStore;
		const sessions = createSessions({ store });
		const session = await sessions.load(`sid=${"A".repeat(43)}`);
		assert.throws(() => session.get("a"), (error: unknown) => error instanceof SessionStoreError && error.store === "flaky-sync" && /get failed: disk on fire/.test(error.message));
		assert.throws(() => session.get("a"), SessionStoreError, "and on every later use: never an empty session in its place");
	});

	it("with a synchronous store, fail the commit of a change with a typed error naming the store", async () => {
		const events: SessionEvent[] = [];
		const inner = memoryStore({ sweepInterval: 0 });
		let mergeAnswer: "throw" | "promise" | "real" = "real";
		const store: SessionStore = {
			...inner,
			name: "flaky-sync",
			merge: (key, changes, expiresAt) => {
				if (mergeAnswer === "throw") throw new Error("disk full");
				if (mergeAnswer === "promise") return Promise.resolve(true);
				return inner.merge!(key, changes, expiresAt);
			},
		};
		const sessions = createSessions({ store, onEvent: (e) => events.push(e) });
		const cookie = cookieOf((await request(sessions, undefined, (s) => s.set("n", 1))).setCookie);

		mergeAnswer = "throw";
		const failing = await sessions.load(cookie);
		failing.increment("n");
		assert.throws(() => sessions.commit(failing, { secure: false }), (error: unknown) => error instanceof SessionStoreError && /^sessionkit\/flaky-sync: merge failed: disk full/.test(error.message));
		assert.equal(events.at(-1)?.type, "store-error");

		mergeAnswer = "promise";
		const lying = await sessions.load(cookie);
		lying.increment("n");
		assert.throws(() => sessions.commit(lying, { secure: false }), (error: unknown) => error instanceof SessionStoreError && /says it is synchronous but returned a promise/.test(error.message));

		mergeAnswer = "real";
		const { session } = await request(sessions, cookie);
		assert.equal(session.get("n"), 1, "neither failed increment landed");
	});

	it("fail the commit: nothing is silently dropped", async () => {
		const sessions = createSessions({ store: failing("set") });
		const session = await sessions.load(undefined);
		session.set("a", 1);
		await assert.rejects(async () => sessions.commit(session, { secure: false }), SessionStoreError);
	});
});

describe("manager operations", () => {
	it("destroyById, count, gc and onDestroy", async () => {
		const { sessions, clock, storeClock } = setup({ idleTimeout: 600 });
		const destroyed: string[] = [];
		const unsubscribe = sessions.onDestroy((s) => {
			destroyed.push(`${s.reason}:${s.subject}`);
		});
		const a = await request(sessions, undefined, (s) => {
			s.subject = "u1";
			s.set("x", 1);
		});
		await request(sessions, undefined, (s) => s.set("x", 2));
		assert.equal(await sessions.count(), 2);
		await sessions.destroyById(a.session.id!);
		assert.deepEqual(destroyed, ["by-id:u1"]);
		assert.equal((await request(sessions, cookieOf(a.setCookie))).session.isNew, true);
		await sessions.destroyById("not-an-id");
		await sessions.destroyById(a.session.id!); // gone already
		await sessions.destroyById("0".repeat(64)); // never existed
		assert.deepEqual(destroyed, ["by-id:u1"], "onDestroy hears only of a session that ended");
		clock.advance(601);
		storeClock.advance(601);
		assert.equal(await sessions.gc(), 1);
		assert.equal(await sessions.count(), 0);
		unsubscribe();
	});

	it("destroyBySubject passes on an onDestroy callback's own error, never as a store failure", async () => {
		const { sessions, events } = setup();
		await request(sessions, undefined, (s) => {
			s.subject = "u3";
			s.set("x", 1);
		});
		sessions.onDestroy(() => {
			throw new Error("bug in the app's callback");
		});
		await assert.rejects(sessions.destroyBySubject("u3"), (error: unknown) => !(error instanceof SessionStoreError) && (error as Error).message === "bug in the app's callback");
		assert.ok(!events.some((e) => e.type === "store-error"), "the store did not fail");
		assert.equal(await sessions.count(), 0, "the sessions were ended all the same");
	});

	it("listBySubject and destroyBySubject refuse a subject no session can have with SessionUsageError, instead of finding nothing", async () => {
		const { sessions } = setup();
		const made = await request(sessions, undefined, (s) => {
			s.subject = "42";
			s.set("x", 1);
		});
		// A numeric user id where the session's subject is its string: "log out everywhere" must not silently do nothing.
		for (const subject of [42, undefined, null, "", "a\u0000b", "x".repeat(257)]) {
			await assert.rejects(sessions.destroyBySubject(subject as string), SessionUsageError, String(subject));
			await assert.rejects(sessions.listBySubject(subject as string), SessionUsageError, String(subject));
		}
		assert.equal((await request(sessions, cookieOf(made.setCookie))).session.get("x"), 1, "the session is untouched");
		assert.equal(await sessions.destroyBySubject("42"), 1);
	});

	it("a feature the store lacks is refused with SessionUsageError, as its code says", async () => {
		const sealed = createSessions({ store: cookieStore({ secrets: ["0123456789abcdef0123456789abcdef"] }) });
		const { listBySubject: _list, deleteBySubject: _delete, count: _count, ...plain } = memoryStore({ sweepInterval: 0 });
		const bare = createSessions({ store: { ...plain, name: "bare" } });
		for (const [name, call] of [
			["listBySubject", () => bare.listBySubject("u1")],
			["destroyBySubject", () => bare.destroyBySubject("u1")],
			["count", () => bare.count()],
			["destroyById on a sealed cookie", () => sealed.destroyById("0".repeat(64))],
		] as const) {
			await assert.rejects(call(), (error: unknown) => error instanceof SessionUsageError && error.code === "SESSION_USAGE" && /needs a store with/.test(error.message), name);
		}
	});

	it("listBySubject shows public ids and times, never tokens", async () => {
		const { sessions } = setup();
		const made = await request(sessions, undefined, (s) => {
			s.subject = "u9";
			s.set("x", 1);
		});
		const [info] = await sessions.listBySubject("u9");
		assert.equal(info?.id, made.session.id);
		assert.ok(!JSON.stringify(info).includes(cookieOf(made.setCookie).slice(4)));
	});

	it("events never carry the raw token", async () => {
		const { sessions, events } = setup();
		const made = await request(sessions, undefined, (s) => s.set("x", 1));
		const token = cookieOf(made.setCookie).slice(4);
		await request(sessions, `sid=${token}`, (s) => s.renew());
		await request(sessions, `sid=${token}`);
		assert.ok(events.length >= 3);
		assert.ok(!JSON.stringify(events).includes(token));
	});
});

describe("load's onUse, for adapters", () => {
	it("runs once, on the first use of a lazy session, and never for a request that does not use it", async () => {
		const { sessions } = setup();
		const cookie = cookieOf((await request(sessions, undefined, (s) => s.set("n", 1))).setCookie);
		const used: unknown[] = [];
		const untouched = await sessions.load(cookie, (s) => used.push(s));
		assert.deepEqual((await sessions.commit(untouched, { secure: false })).setCookie, null);
		assert.equal(used.length, 0, "never used: never called");
		const session = await sessions.load(cookie, (s) => used.push(s));
		assert.equal(used.length, 0, "not yet used");
		assert.equal(session.get("n"), 1);
		session.set("n", 2);
		assert.deepEqual(used, [session], "called once, with the session");
		const fresh = await sessions.load(undefined, (s) => used.push(s));
		fresh.set("a", 1);
		assert.deepEqual(used, [session, fresh]);
	});

	it("runs right away, with the loaded session, for a store that answers asynchronously", async () => {
		const inner = memoryStore({ sweepInterval: 0 });
		const store = new Proxy(inner, {
			get(target, property, receiver) {
				if (property === "synchronous") return undefined;
				const value = Reflect.get(target, property, receiver);
				return typeof value === "function" ? async (...args: unknown[]) => value.apply(target, args) : value;
			},
		}) as SessionStore;
		const sessions = createSessions({ store });
		const cookie = cookieOf((await request(sessions, undefined, (s) => s.set("n", 1))).setCookie);
		const used: unknown[] = [];
		const loaded = sessions.load(cookie, (s) => used.push(s));
		assert.ok(loaded instanceof Promise);
		const session = await loaded;
		assert.deepEqual(used, [session]);
		assert.equal(session.get("n"), 1);
		assert.equal(used.length, 1);
	});
});
