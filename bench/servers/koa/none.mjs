// Koa 3 without sessions: the ceiling.
import Koa from "koa";
import { ready, tuneServer } from "../common.mjs";

let counter = 0;
const app = new Koa();
// The floor variant: what one middleware costs, the least any session middleware adds.
if (process.env.BENCH_EMPTY_MIDDLEWARE === "1") {
	app.use(async (_ctx, next) => {
		await next();
	});
}
app.use((ctx) => {
	switch (ctx.path) {
		case "/untouched":
		case "/login":
		case "/create":
			ctx.body = "ok";
			return;
		case "/counter":
			ctx.body = String(++counter);
			return;
		case "/read":
			ctx.body = String(counter);
			return;
	}
});

await ready(() => new Promise((resolve) => {
	const server = tuneServer(app.listen(0, "127.0.0.1", () => resolve(server.address().port)));
}));
