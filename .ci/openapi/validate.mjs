// Validates an OpenAPI document with swagger-parser: the OpenAPI 3.0 JSON
// schema, then the spec's own rules (unique operation ids, path parameters
// declared, $refs resolved). Usage: node validate.mjs openapi.yaml
import SwaggerParser from "@apidevtools/swagger-parser";

const file = process.argv[2];
if (!file) {
  console.error("usage: node validate.mjs openapi.yaml");
  process.exit(2);
}
try {
  const api = await SwaggerParser.validate(file);
  console.log(`swagger-parser: ${file} is valid OpenAPI ${api.openapi}`);
} catch (err) {
  console.error(`swagger-parser: ${file}: ${err.message}`);
  process.exit(1);
}
