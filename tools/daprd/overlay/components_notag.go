// Package components stands in for Dapr's cmd/daprd/components/zz_notag.go in the
// build copy that scripts/daprd.sh makes: Dapr's file panics unless every component is
// compiled in (-tags allcomponents); ours registers nothing, main.go registers ours.
package components
