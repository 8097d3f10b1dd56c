package telemetry

import "testing"

func TestSubjectsCollide(t *testing.T) {
	cases := []struct {
		a, b string
		want bool
	}{
		{"smelter.v1.>", "smelter.v1.*.*.*.audit", true},
		{"smelter.>", "smelter.v1.*.*.*.audit", true},
		{"smelter.v1.site1.>", "smelter.v1.*.*.*.audit", true},
		{"smelter.v1.*.*.*.*", "smelter.v1.*.*.*.audit", true},
		{"smelter.v1.*.*.*.data", "smelter.v1.*.*.*.audit", false},
		{"smelter.v1.site1.*.*.audit", "smelter.v1.site2.*.*.audit", false},
		{"smelter.v1.*.*.*", "smelter.v1.*.*.*.audit", false},
		{"smelter.v1.*.*.*.audit.>", "smelter.v1.*.*.*.audit", false},
	}
	for _, tc := range cases {
		if got := SubjectsCollide(tc.a, tc.b); got != tc.want {
			t.Errorf("SubjectsCollide(%q, %q) = %v, want %v", tc.a, tc.b, got, tc.want)
		}
		if got := SubjectsCollide(tc.b, tc.a); got != tc.want {
			t.Errorf("SubjectsCollide(%q, %q) = %v, want %v", tc.b, tc.a, got, tc.want)
		}
	}
	for _, tel := range TelemetryStreamSubjects("*") {
		for _, k := range []Kind{KindAudit, KindCommand} {
			if SubjectsCollide(tel, KindFilter("*", k)) {
				t.Errorf("telemetry stream subject %s captures .%s", tel, k)
			}
		}
	}
}
