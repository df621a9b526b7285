// `compression17` is the npm alias of compression@1.7.4, which still checks `res._header` where
// 1.8 asks `res.headersSent`. Its API is that of the current version's types.
declare module "compression17" {
	import compression from "compression";
	export default compression;
}
