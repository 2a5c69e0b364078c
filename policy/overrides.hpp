// `-o dotted.key=value` overrides, applied to the YAML tree before conversion so an
// overridden value passes exactly the validation a value in the file would.
#pragma once

#include <yaml-cpp/yaml.h>

#include <string_view>

#include "policy/yaml_reader.hpp"

namespace mxgate::policy::detail {

// Applies override number `position` (1-based, as given on the command line). Errors are
// reported as "-o:N: key: message"; errors found later in the value are blamed on the same
// "-o:N" through the context.
//
// Syntax: KEY=VALUE. KEY is a dotted path; list elements are indexed as in error
// messages (`dnsbl[0].weight`). Missing sections are created (`redis.address=...`
// enables Redis). VALUE is one YAML scalar taken literally, so `#` and `:` need no quoting;
// `~` or `null` is an empty value; a value starting with a quote is unquoted as YAML; a
// value in [brackets] is a YAML flow list; for list keys, commas separate items
// (`dns.servers=127.0.0.1:5353,[::1]:5353`).
void apply_override(Context& context, YAML::Node& root, std::string_view text, int position);

}  // namespace mxgate::policy::detail
