package scoring_test

import (
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"

	"github.com/tessera-gpu/tessera/pkg/scoring"
)

func expr(op corev1.NodeSelectorOperator, values ...string) corev1.NodeSelectorRequirement {
	return corev1.NodeSelectorRequirement{Key: scoring.ProductLabel, Operator: op, Values: values}
}

func required(terms ...[]corev1.NodeSelectorRequirement) *corev1.Affinity {
	ns := &corev1.NodeSelector{}
	for _, t := range terms {
		ns.NodeSelectorTerms = append(ns.NodeSelectorTerms, corev1.NodeSelectorTerm{MatchExpressions: t})
	}
	return &corev1.Affinity{NodeAffinity: &corev1.NodeAffinity{RequiredDuringSchedulingIgnoredDuringExecution: ns}}
}

func TestProductsFromAffinity(t *testing.T) {
	known := []string{a100, h100, l40s}
	zone := corev1.NodeSelectorRequirement{Key: "topology.kubernetes.io/zone", Operator: corev1.NodeSelectorOpIn, Values: []string{"a"}}
	preferH100 := &corev1.Affinity{NodeAffinity: &corev1.NodeAffinity{PreferredDuringSchedulingIgnoredDuringExecution: []corev1.PreferredSchedulingTerm{
		{Weight: 10, Preference: corev1.NodeSelectorTerm{MatchExpressions: []corev1.NodeSelectorRequirement{expr(corev1.NodeSelectorOpIn, h100)}}},
		{Weight: 0, Preference: corev1.NodeSelectorTerm{MatchExpressions: []corev1.NodeSelectorRequirement{expr(corev1.NodeSelectorOpIn, l40s)}}},
	}}}
	for _, tc := range []struct {
		name          string
		aff           *corev1.Affinity
		wantAllowed   []string
		wantPreferred []string
		wantErr       string
	}{
		{name: "no affinity"},
		{name: "in", aff: required([]corev1.NodeSelectorRequirement{expr(corev1.NodeSelectorOpIn, h100, l40s)}), wantAllowed: []string{h100, l40s}},
		{name: "terms are ORed", aff: required([]corev1.NodeSelectorRequirement{expr(corev1.NodeSelectorOpIn, h100)}, []corev1.NodeSelectorRequirement{expr(corev1.NodeSelectorOpIn, a100)}),
			wantAllowed: []string{a100, h100}},
		{name: "expressions are ANDed", aff: required([]corev1.NodeSelectorRequirement{expr(corev1.NodeSelectorOpIn, h100, l40s), expr(corev1.NodeSelectorOpIn, l40s, a100)}),
			wantAllowed: []string{l40s}},
		{name: "not in: every known product but", aff: required([]corev1.NodeSelectorRequirement{expr(corev1.NodeSelectorOpNotIn, h100)}), wantAllowed: []string{a100, l40s}},
		{name: "a term without a product constraint allows all", aff: required([]corev1.NodeSelectorRequirement{expr(corev1.NodeSelectorOpIn, h100)}, []corev1.NodeSelectorRequirement{zone})},
		{name: "does not exist", aff: required([]corev1.NodeSelectorRequirement{expr(corev1.NodeSelectorOpDoesNotExist)}), wantErr: "allows no gpu product"},
		{name: "gt", aff: required([]corev1.NodeSelectorRequirement{zone}, []corev1.NodeSelectorRequirement{expr(corev1.NodeSelectorOpGt, "1")}),
			wantErr: "required node selector term 1: operator Gt on nvidia.com/gpu.product"},
		{name: "preferred", aff: preferH100, wantPreferred: []string{h100}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			allowed, preferred, err := scoring.ProductsFromAffinity(tc.aff, known)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(allowed, tc.wantAllowed) || !slices.Equal(preferred, tc.wantPreferred) {
				t.Errorf("allowed %v preferred %v, want %v and %v", allowed, preferred, tc.wantAllowed, tc.wantPreferred)
			}
		})
	}
}
