package scoring

import (
	"fmt"
	"math"
	"slices"

	"k8s.io/apimachinery/pkg/util/validation/field"
)

// ProductClass is a group of GPU products that cost the same to use.
type ProductClass struct {
	// Name identifies the class ("h100").
	Name string `json:"name"`
	// Products are the nvidia.com/gpu.product label values of the class.
	Products []string `json:"products"`
	// Cost is the relative cost of one GPU of the class (> 0). Raise it for
	// a scarce class to keep it for the pods that need it.
	Cost float64 `json:"cost"`
}

// ProductConfig says what each GPU product costs to use.
type ProductConfig struct {
	Classes []ProductClass `json:"classes"`
	// UnknownCost is the cost of a product that no class lists (> 0).
	UnknownCost float64 `json:"unknownCost"`
}

// DefaultProductConfig returns the built-in classes: relative costs of one
// GPU-hour, roughly as cloud list prices rank them, by the product labels GPU
// Feature Discovery writes.
func DefaultProductConfig() ProductConfig {
	return ProductConfig{
		UnknownCost: 1,
		Classes: []ProductClass{
			{Name: "b200", Cost: 8, Products: []string{"NVIDIA-B200"}},
			{Name: "h200", Cost: 5, Products: []string{"NVIDIA-H200", "NVIDIA-H200-141GB-HBM3e", "NVIDIA-H200-NVL"}},
			{Name: "h100", Cost: 4, Products: []string{"NVIDIA-H100-80GB-HBM3", "NVIDIA-H100-PCIe", "NVIDIA-H100-NVL"}},
			{Name: "a100-80gb", Cost: 2.5, Products: []string{"NVIDIA-A100-SXM4-80GB", "NVIDIA-A100-80GB-PCIe"}},
			{Name: "a100-40gb", Cost: 2, Products: []string{"NVIDIA-A100-SXM4-40GB", "NVIDIA-A100-PCIE-40GB"}},
			{Name: "l40s", Cost: 1.5, Products: []string{"NVIDIA-L40S"}},
			{Name: "a10", Cost: 0.8, Products: []string{"NVIDIA-A10"}},
			{Name: "rtx-4090", Cost: 0.6, Products: []string{"NVIDIA-GeForce-RTX-4090"}},
			{Name: "t4", Cost: 0.4, Products: []string{"Tesla-T4"}},
		},
	}
}

// Validate checks the configuration. Errors name the class (by index and
// name) and the field: an empty or repeated class name, a cost that is not a
// positive finite number, an empty product or one listed in two classes.
func (c *ProductConfig) Validate(path *field.Path) field.ErrorList {
	var errs field.ErrorList
	if !positive(c.UnknownCost) {
		errs = append(errs, field.Invalid(path.Child("unknownCost"), c.UnknownCost, "must be a positive finite number"))
	}
	names := map[string]int{}
	owner := map[string]string{}
	for i, cl := range c.Classes {
		p := path.Child("classes").Index(i)
		switch prev, dup := names[cl.Name]; {
		case cl.Name == "":
			errs = append(errs, field.Required(p.Child("name"), "a product class needs a name"))
		case dup:
			errs = append(errs, field.Duplicate(p.Child("name"), fmt.Sprintf("%s (also class %d)", cl.Name, prev)))
		default:
			names[cl.Name] = i
		}
		if !positive(cl.Cost) {
			errs = append(errs, field.Invalid(p.Child("cost"), cl.Cost, fmt.Sprintf("class %q: must be a positive finite number", cl.Name)))
		}
		if len(cl.Products) == 0 {
			errs = append(errs, field.Required(p.Child("products"), fmt.Sprintf("class %q lists no product", cl.Name)))
		}
		for j, prod := range cl.Products {
			pp := p.Child("products").Index(j)
			switch o, dup := owner[prod]; {
			case prod == "":
				errs = append(errs, field.Invalid(pp, prod, fmt.Sprintf("class %q: a product label must not be empty", cl.Name)))
			case dup:
				errs = append(errs, field.Duplicate(pp, fmt.Sprintf("%s (class %q also lists it, in class %q)", prod, o, cl.Name)))
			default:
				owner[prod] = cl.Name
			}
		}
	}
	return errs
}

func positive(v float64) bool { return v > 0 && !math.IsInf(v, 0) && !math.IsNaN(v) }

// Cost returns the cost of one GPU of product, and the name of its class
// ("" when no class lists it and UnknownCost applies).
func (c *ProductConfig) Cost(product string) (float64, string) {
	for _, cl := range c.Classes {
		if slices.Contains(cl.Products, product) {
			return cl.Cost, cl.Name
		}
	}
	return c.UnknownCost, ""
}

// ProductScore scores a node's product for a pod, in [0, 1] (higher is
// better). allowed is the hard set (empty allows every product): a product
// outside it scores 0 with ok false. Otherwise the score is cost-aware,
// among the candidates, the allowed products that are present (present nil
// means every configured product; an empty allowed set means every present
// product): the cheapest candidate scores 1, the dearest 0, the others
// linearly by cost in between (1 when all cost the same), so that a premium
// product is not spent on a pod that a cheaper allowed product would serve.
// A product in preferred scores 1; when preferred is not empty, the others
// score half as much.
func (c *ProductConfig) ProductScore(product string, allowed, preferred, present []string) (score float64, ok bool) {
	if len(allowed) > 0 && !slices.Contains(allowed, product) {
		return 0, false
	}
	if slices.Contains(preferred, product) {
		return 1, true
	}
	if present == nil {
		present = []string{product}
		for _, cl := range c.Classes {
			present = append(present, cl.Products...)
		}
	}
	lo, hi := math.Inf(1), math.Inf(-1)
	for _, p := range present {
		if len(allowed) == 0 || slices.Contains(allowed, p) {
			cost, _ := c.Cost(p)
			lo, hi = min(lo, cost), max(hi, cost)
		}
	}
	cost, _ := c.Cost(product)
	s := costScore(cost, lo, hi)
	if len(preferred) > 0 {
		s /= 2
	}
	return s, true
}

// costScore maps cost within [lo, hi] to 1 (lo) .. 0 (hi).
func costScore(cost, lo, hi float64) float64 {
	if !(hi > lo) {
		return 1
	}
	return max(0, min(1, (hi-cost)/(hi-lo)))
}
