#!/usr/bin/env bash
# Writes the seed corpora of every fuzz target into fuzz/corpus/<target>/ (idempotent; the fuzzer
# adds its own finds next to them). Binary seeds come from vault-core's encoders
# (`fuzz_api::samples`, via the `fuzz_seeds` example); text seeds are written here.
set -euo pipefail
cd "$(dirname "$0")/.."
corpus=fuzz/corpus

cargo run -q -p vault-core --features danger-fuzzing --example fuzz_seeds -- "$corpus"

mkdir -p "$corpus"/{schema_toml,import_rows,ops_model}
cp examples/webshop.toml "$corpus/schema_toml/webshop.toml"
cat > "$corpus/schema_toml/minimal.toml" <<'TOML'
version = 1
[purposes.account]
description = "Customer account"
legal_basis = "contract"
retention = "2y after last_update"
[types.customer.fields.name]
type = "text"
purpose = "account"
required = true
[types.customer.fields.email]
type = "email"
purpose = "account"
index = true
TOML

cat > "$corpus/import_rows/customers.jsonl" <<'JSONL'
{"type": "customer", "record": {"first_name": "Jan", "last_name": "Berg", "email": "jan@voorbeeld.nl"}}
{"type": "customer", "label": "x1", "record": {"first_name": "Anna", "tussenvoegsel": "de", "last_name": "Vries", "email": "Anna@Voorbeeld.nl", "phone": "+31 6 12345678"}}
{"type": "address", "record": {"recipient_name": "J. Berg", "street": "Dorpsstraat", "house_number": 1, "postcode": "1234 AB", "city": "Utrecht", "country": "NL"}}
JSONL
cat > "$corpus/import_rows/rejects.jsonl" <<'JSONL'
{"type": "customer", "subject": "not-an-id", "record": {"first_name": "X"}}
{"type": "nope", "record": {}}
[1, 2, 3]
{"type": "customer", "label": 7, "record": null}
JSONL

# The ops target decodes its input with `arbitrary`: any bytes are a sequence of operations.
printf '\x00\x01\x02\x03\x04\x05\x06\x07\x08\x09\x0a\x0b\x0c\x0d\x0e\x0f' > "$corpus/ops_model/counting"
printf '\x00\x00\x00\x01\x00\x01\x00\x00\x01\x00\x00\x03\x00\x05\x00\x06\x01\x00' > "$corpus/ops_model/put-get"
head -c 256 /dev/zero | tr '\0' '\377' > "$corpus/ops_model/ones"
echo "seeds written under $corpus"
