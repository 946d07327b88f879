package scoring

import (
	"fmt"
	"slices"

	corev1 "k8s.io/api/core/v1"
)

// ProductLabel is the node label GPU Feature Discovery writes the GPU product to.
const ProductLabel = "nvidia.com/gpu.product"

// ProductsFromAffinity reads a pod's allowed and preferred GPU products from
// its node affinity on ProductLabel, for Demand.Allowed and
// Demand.Preferred.
//
// Required terms are ORed: the allowed products are the union over the
// terms, each term allowing the intersection of its In values minus its
// NotIn values (known, the products the cluster has, stands for "every
// product" in a term with NotIn and no In). A term that does not constrain
// the label allows every product: allowed is then nil. Preferred terms of
// positive weight contribute their In values to preferred.
//
// It fails, naming the term and operator, for Gt/Lt on the label, and when
// the required terms allow no product at all (DoesNotExist, or disjoint In
// sets).
func ProductsFromAffinity(aff *corev1.Affinity, known []string) (allowed, preferred []string, err error) {
	if aff == nil || aff.NodeAffinity == nil {
		return nil, nil, nil
	}
	na := aff.NodeAffinity
	if req := na.RequiredDuringSchedulingIgnoredDuringExecution; req != nil && len(req.NodeSelectorTerms) > 0 {
		unconstrained := false
		for i, term := range req.NodeSelectorTerms {
			set, constrained, err := termProducts(term.MatchExpressions, known)
			if err != nil {
				return nil, nil, fmt.Errorf("required node selector term %d: %w", i, err)
			}
			if !constrained {
				unconstrained = true
				continue
			}
			allowed = append(allowed, set...)
		}
		if unconstrained {
			allowed = nil
		} else {
			slices.Sort(allowed)
			allowed = slices.Compact(allowed)
			if len(allowed) == 0 {
				return nil, nil, fmt.Errorf("required node affinity on %s allows no gpu product", ProductLabel)
			}
		}
	}
	for i, pt := range na.PreferredDuringSchedulingIgnoredDuringExecution {
		if pt.Weight <= 0 {
			continue
		}
		for _, e := range pt.Preference.MatchExpressions {
			if e.Key != ProductLabel {
				continue
			}
			switch e.Operator {
			case corev1.NodeSelectorOpIn:
				preferred = append(preferred, e.Values...)
			case corev1.NodeSelectorOpGt, corev1.NodeSelectorOpLt:
				return nil, nil, fmt.Errorf("preferred node selector term %d: operator %s on %s, want In, NotIn, Exists or DoesNotExist", i, e.Operator, ProductLabel)
			}
		}
	}
	slices.Sort(preferred)
	return allowed, slices.Compact(preferred), nil
}

// termProducts returns the products one ANDed term allows, and whether it
// constrains the product label at all.
func termProducts(exprs []corev1.NodeSelectorRequirement, known []string) ([]string, bool, error) {
	var in, out []string
	haveIn, constrained := false, false
	for _, e := range exprs {
		if e.Key != ProductLabel {
			continue
		}
		switch e.Operator {
		case corev1.NodeSelectorOpIn:
			if haveIn {
				in = slices.DeleteFunc(in, func(p string) bool { return !slices.Contains(e.Values, p) })
			} else {
				in = slices.Clone(e.Values)
			}
			haveIn, constrained = true, true
		case corev1.NodeSelectorOpNotIn:
			out = append(out, e.Values...)
			constrained = true
		case corev1.NodeSelectorOpExists:
		case corev1.NodeSelectorOpDoesNotExist:
			return nil, true, nil
		default:
			return nil, false, fmt.Errorf("operator %s on %s, want In, NotIn, Exists or DoesNotExist", e.Operator, ProductLabel)
		}
	}
	if !constrained {
		return nil, false, nil
	}
	if !haveIn {
		in = slices.Clone(known)
	}
	return slices.DeleteFunc(in, func(p string) bool { return slices.Contains(out, p) }), true, nil
}
