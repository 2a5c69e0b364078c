// Tests for composite rule expressions: precedence, counting, errors with columns.
#include "policy/expression.hpp"

#include <gtest/gtest.h>

#include <map>
#include <string>

namespace mxgate::policy {
namespace {

Expression parse_ok(const std::string& text) {
  std::string error;
  auto expression = Expression::parse(text, error);
  EXPECT_TRUE(expression.has_value()) << text << ": " << error;
  return expression ? *expression : Expression();
}

std::string parse_error(const std::string& text) {
  std::string error;
  auto expression = Expression::parse(text, error);
  EXPECT_FALSE(expression.has_value()) << text;
  return error;
}

bool evaluate(const std::string& text, const std::map<std::string, bool>& hits) {
  const Expression expression = parse_ok(text);
  return expression.evaluate([&](std::size_t index) {
    auto found = hits.find(expression.names()[index]);
    return found != hits.end() && found->second;
  });
}

TEST(Expression, BooleanPrecedenceFollowsC) {
  EXPECT_EQ(parse_ok("A && (B || !C)").to_string(), "(A && (B || !C))");
  EXPECT_EQ(parse_ok("A || B && C").to_string(), "(A || (B && C))");
  EXPECT_EQ(parse_ok("A + B + C >= 2").to_string(), "(((A + B) + C) >= 2)");
  EXPECT_EQ(parse_ok("!A + B").to_string(), "(!A + B)");
  EXPECT_EQ(parse_ok("a and not b or c").to_string(), "((a && !b) || c)");
}

TEST(Expression, EvaluatesHits) {
  EXPECT_TRUE(evaluate("A && (B || !C)", {{"A", true}, {"B", false}, {"C", false}}));
  EXPECT_FALSE(evaluate("A && (B || !C)", {{"A", true}, {"B", false}, {"C", true}}));
  EXPECT_TRUE(evaluate("A + B + C >= 2", {{"A", true}, {"C", true}}));
  EXPECT_FALSE(evaluate("A + B + C >= 2", {{"B", true}}));
  EXPECT_TRUE(evaluate("A + B == 0", {}));
  EXPECT_TRUE(evaluate("A != B", {{"B", true}}));
  EXPECT_TRUE(evaluate("A + B < 1 || C", {{"A", true}, {"C", true}}));
}

TEST(Expression, NamesKeepDashesColonsAndDots) {
  const Expression expression = parse_ok("advance-fee && phish:12 || x.y_z");
  ASSERT_EQ(expression.names().size(), 3u);
  EXPECT_EQ(expression.names()[0], "advance-fee");
  EXPECT_EQ(expression.names()[1], "phish:12");
  EXPECT_EQ(expression.names()[2], "x.y_z");
}

TEST(Expression, RepeatedNamesAreListedOnce) {
  EXPECT_EQ(parse_ok("A + A + B").names().size(), 2u);
}

TEST(Expression, ErrorsNameTheColumn) {
  EXPECT_EQ(parse_error("A && (B || C"), "column 13: expected ')', found the end");
  EXPECT_EQ(parse_error("A &&"),
            "column 5: expected a rule name, a number or '(', found the end of the expression");
  EXPECT_EQ(parse_error("A B"), "column 3: unexpected 'B'");
  EXPECT_EQ(parse_error("A & B"), "column 3: unexpected '&'");
  EXPECT_EQ(parse_error(""),
            "column 1: expected a rule name, a number or '(', found the end of the expression");
  EXPECT_EQ(parse_error("A && and"), "column 6: expected a rule name, found the operator 'and'");
  EXPECT_EQ(parse_error("A - B"), "column 3: unexpected '-'");
}

TEST(Expression, DepthAndLengthAreBounded) {
  std::string deep(100, '(');
  deep += "A" + std::string(100, ')');
  EXPECT_NE(parse_error(deep).find("nested deeper than 64"), std::string::npos);
  std::string nots(100, '!');
  EXPECT_NE(parse_error(nots + "A").find("nested deeper than 64"), std::string::npos);
  EXPECT_NE(parse_error(std::string(5000, 'A')).find("longer than 4096"), std::string::npos);
  // A long flat chain is fine.
  std::string chain = "A";
  for (int i = 0; i < 500; ++i) chain += " + A";
  EXPECT_TRUE(evaluate(chain + " >= 501", {{"A", true}}));
}

TEST(Expression, LargeNumbersAreRefused) {
  EXPECT_EQ(parse_error("A + 12345678901 > 2"), "column 5: number too large");
  EXPECT_TRUE(evaluate("A + 999999999 > 999999999", {{"A", true}}));
}

}  // namespace
}  // namespace mxgate::policy
