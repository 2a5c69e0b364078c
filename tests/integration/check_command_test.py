"""Promise: `mxgate check` accepts the shipped example config and points at the exact
`file:line` of a mistake, exiting 1, before an admin reloads."""

import os
import re
import shutil
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402


class CheckCommandTest(harness.IntegrationTest):
    def setUp(self):
        harness.require_mxgate()
        self.dir = harness.make_tempdir("mxgate-check-")
        self.addCleanup(shutil.rmtree, self.dir, True)

    def write(self, name, text):
        path = os.path.join(self.dir, name)
        with open(path, "w") as f:
            f.write(text)
        return path

    def check(self, path, *overrides):
        args = ["check", "-c", path]
        for override in overrides:
            args += ["-o", override]
        return harness.run_mxgate(*args)

    def test_shipped_example_config_passes(self):
        path = os.path.join(harness.SOURCE_DIR, "conf", "mxgate.yaml")
        self.assertTrue(os.path.exists(path), f"{path} is missing")
        result = self.check(path)
        self.assertEqual(result.returncode, 0, result.stdout + result.stderr)

    def test_minimal_config_passes(self):
        path = self.write("ok.yaml", "hostname: mx.test\nrelay_domains: [example.org]\n"
                                     "backend:\n  address: 127.0.0.1:10025\n")
        result = self.check(path)
        self.assertEqual(result.returncode, 0, result.stdout + result.stderr)

    def test_bad_value_reported_with_file_and_line(self):
        path = self.write("broken.yaml", "limits:\n  max_recipients: lots\n")
        result = self.check(path)
        output = result.stdout + result.stderr
        self.assertEqual(result.returncode, 1, output)
        self.assertRegex(output, re.escape(path) + r":2(:\d+)?:")
        self.assertIn("max_recipients", output)

    def test_error_further_down_points_at_its_line(self):
        path = self.write("broken.yaml", "hostname: mx.test\n"
                                         "relay_domains: [example.org]\n"
                                         "# a comment\n"
                                         "limits:\n"
                                         "  max_errors: 5\n"
                                         "  command_timeout: soon\n")
        result = self.check(path)
        output = result.stdout + result.stderr
        self.assertEqual(result.returncode, 1, output)
        self.assertRegex(output, re.escape(path) + r":6(:\d+)?:")
        self.assertIn("command_timeout", output)

    def test_yaml_syntax_error_reported_with_line(self):
        path = self.write("syntax.yaml", "hostname: mx.test\nlimits: {max_errors: 3\n")
        result = self.check(path)
        output = result.stdout + result.stderr
        self.assertEqual(result.returncode, 1, output)
        self.assertRegex(output, re.escape(path) + r":\d+")

    def test_bad_override_is_an_error(self):
        path = self.write("ok.yaml", "hostname: mx.test\nrelay_domains: [example.org]\n")
        result = self.check(path, "limits.max_recipients=lots")
        output = result.stdout + result.stderr
        self.assertEqual(result.returncode, 1, output)
        self.assertIn("limits.max_recipients", output)

    def test_missing_file_is_an_error(self):
        result = self.check(os.path.join(self.dir, "does-not-exist.yaml"))
        self.assertEqual(result.returncode, 1, result.stdout + result.stderr)


if __name__ == "__main__":
    unittest.main()
