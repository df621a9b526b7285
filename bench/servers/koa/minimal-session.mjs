// Koa 3 with the minimal session (../minimal.mjs), as an app.use() middleware that puts it on
// ctx.session.
import Koa from "koa";
import { ready, tuneServer } from "../common.mjs";
import { countOf, incrementMinimal, loadMinimal, loginMinimal } from "../minimal.mjs";

const app = new Koa();
app.use(async (ctx, next) => {
	ctx.session = loadMinimal(ctx.headers.cookie);
	await next();
});
app.use((ctx) => {
	if (ctx.path === "/login") {
		ctx.set("set-cookie", loginMinimal());
		ctx.body = "ok";
	} else if (ctx.session === null || (ctx.path !== "/counter" && ctx.path !== "/read")) {
		ctx.status = 404;
	} else {
		ctx.body = String(ctx.path === "/read" ? countOf(ctx.session) : incrementMinimal(ctx.session));
	}
});

await ready(() => new Promise((resolve) => {
	const server = tuneServer(app.listen(0, "127.0.0.1", () => resolve(server.address().port)));
}));
