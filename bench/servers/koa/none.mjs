// Koa 3 without sessions: the ceiling.
import Koa from "koa";
import { ready, tuneServer } from "../common.mjs";

let counter = 0;
const app = new Koa();
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
