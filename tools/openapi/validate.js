// Validates an OpenAPI 3.0 document (structure, $refs, schemas). Exit 0 when valid.
const SwaggerParser = require("@apidevtools/swagger-parser");
const file = process.argv[2];
SwaggerParser.validate(file)
  .then((api) => {
    console.log(`${file}: valid OpenAPI ${api.openapi}, ${Object.keys(api.paths).length} paths`);
  })
  .catch((err) => {
    console.error(`${file}: ${err.message}`);
    process.exit(1);
  });
