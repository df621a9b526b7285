// Express 5 with express-session, configured as its README recommends (resave: false,
// saveUninitialized: false). Stores: its MemoryStore, connect-redis (on node-redis, the client
// connect-redis supports), connect-pg-simple, better-express-store (SQLite on better-sqlite3).
import express from "express";
import session from "express-session";
import { countPeerStore, countPgQueries, env, objectLogin, ready, SECRET, skip, tuneServer } from "../common.mjs";

let store;
let close = async () => {};
switch (env.store) {
	case "memory":
		store = new session.MemoryStore();
		break;
	case "redis": {
		const { RedisStore } = await import("connect-redis");
		const { createClient } = await import("redis");
		const client = createClient({ url: env.redisUrl });
		await client.connect();
		store = new RedisStore({ client });
		close = async () => client.quit();
		break;
	}
	case "postgres": {
		const connectPgSimple = (await import("connect-pg-simple")).default;
		const pg = await countPgQueries();
		const pool = new pg.Pool({ connectionString: env.postgresUrl, max: 10 });
		const PgStore = connectPgSimple(session);
		store = new PgStore({ pool, createTableIfMissing: true, pruneSessionInterval: false });
		close = async () => pool.end();
		break;
	}
	case "sqlite": {
		// The store opens the file itself; WAL, as sessionkit's SQLite store sets, is kept in the file.
		const Database = (await import("better-sqlite3")).default;
		const db = new Database(env.sqlitePath);
		db.pragma("journal_mode = WAL");
		db.close();
		const betterExpressStore = (await import("better-express-store")).default;
		const inner = betterExpressStore({ dbPath: env.sqlitePath });
		// Counted through a wrapper: its touch calls its own set, and set its own destroy, which
		// are one store call each as express-session makes them.
		store = new (class extends session.Store {
			get(...args) { return inner.get(...args); }
			set(...args) { return inner.set(...args); }
			touch(...args) { return inner.touch(...args); }
			destroy(...args) { return inner.destroy(...args); }
		})();
		break;
	}
	default:
		skip(`express-session has no maintained "${env.store}" store in this bench`);
}
countPeerStore(store, ["get", "set", "touch", "destroy"]);

const app = express();
app.use(session({ secret: SECRET, name: "sid", resave: false, saveUninitialized: false, store }));
app.get("/untouched", (_req, res) => res.send("ok"));
app.get("/counter", (req, res) => {
	req.session.count = (req.session.count ?? 0) + 1;
	res.send(String(req.session.count));
});
app.get("/read", (req, res) => res.send(String(req.session.count ?? 0)));
app.get(["/login", "/create"], (req, res) => {
	objectLogin(req.session);
	res.send("ok");
});

await ready(() => new Promise((resolve) => {
	const server = tuneServer(app.listen(0, "127.0.0.1", () => resolve(server.address().port)));
}), close);
