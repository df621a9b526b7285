// Koa 3 with sessionkit's sessionMiddleware (any store: BENCH_STORE).
import Koa from "koa";
import { ready, sessionkit, sessionkitLogin, sessionkitManager, tuneServer } from "../common.mjs";

const { sessionMiddleware, getSession } = await sessionkit("adapters/koa");
const { sessions, close } = await sessionkitManager();

const app = new Koa();
app.use(sessionMiddleware(sessions));
app.use((ctx) => {
	switch (ctx.path) {
		case "/untouched":
			ctx.body = "ok";
			return;
		case "/counter":
			ctx.body = String(getSession(ctx).increment("count"));
			return;
		case "/read":
			ctx.body = String(getSession(ctx).get("count") ?? 0);
			return;
		case "/login":
		case "/create":
			sessionkitLogin(getSession(ctx));
			ctx.body = "ok";
			return;
	}
});

await ready(() => new Promise((resolve) => {
	const server = tuneServer(app.listen(0, "127.0.0.1", () => resolve(server.address().port)));
}), close);
