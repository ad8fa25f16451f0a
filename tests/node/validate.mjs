// Compiles every exported JSON Schema with Ajv in strict mode (JSON Schema 2020-12, formats checked),
// then validates the cases given: [{"schema": "predictions", "record": {...}}, ...].
// Prints {"compiled": [...], "results": [{"schema", "valid", "errors"}]} as JSON.
import { readFileSync, readdirSync, statSync } from "node:fs";
import { join, relative } from "node:path";
import Ajv2020 from "ajv/dist/2020.js";
import addFormats from "ajv-formats";

const [schemaDir, casesFile] = process.argv.slice(2);
const ajv = new Ajv2020({ strict: true, allErrors: true });
addFormats(ajv);

function schemaFiles(dir) {
  return readdirSync(dir).flatMap((name) => {
    const path = join(dir, name);
    if (statSync(path).isDirectory()) return schemaFiles(path);
    return name.endsWith(".schema.json") ? [path] : [];
  });
}

const validators = {};
for (const path of schemaFiles(schemaDir)) {
  const name = relative(schemaDir, path).replace(/\.schema\.json$/, "");
  validators[name] = ajv.compile(JSON.parse(readFileSync(path, "utf8")));
}
const cases = JSON.parse(readFileSync(casesFile, "utf8"));
const results = cases.map(({ schema, record }) => {
  const validate = validators[schema];
  const valid = validate(record);
  const errors = valid ? [] : validate.errors.map((e) => `${e.instancePath} ${e.message}`);
  return { schema, valid, errors };
});
console.log(JSON.stringify({ compiled: Object.keys(validators).sort(), results }));
