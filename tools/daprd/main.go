// Command daprd is the Dapr sidecar with only the components this project uses.
//
// Dapr's own cmd/daprd registers its components from files behind the build tags
// `allcomponents` / `stablecomponents`. Built without those tags it registers none (one
// file of it then panics on purpose; scripts/daprd.sh builds from a copy of the module in
// which that file is overlay/components_notag.go), and this program registers the few
// we need before running the unchanged daprd app: a faster build, a smaller binary, the
// same runtime.
package main

import (
	convecho "github.com/dapr/components-contrib/conversation/echo"
	convopenai "github.com/dapr/components-contrib/conversation/openai"
	nrnameformat "github.com/dapr/components-contrib/nameresolution/nameformat"
	pubsubinmemory "github.com/dapr/components-contrib/pubsub/in-memory"
	pubsubkafka "github.com/dapr/components-contrib/pubsub/kafka"
	pubsubredis "github.com/dapr/components-contrib/pubsub/redis"
	secretenv "github.com/dapr/components-contrib/secretstores/local/env"
	secretfile "github.com/dapr/components-contrib/secretstores/local/file"
	stateinmemory "github.com/dapr/components-contrib/state/in-memory"
	stateredis "github.com/dapr/components-contrib/state/redis"

	"github.com/dapr/dapr/cmd/daprd/app"
	conversationLoader "github.com/dapr/dapr/pkg/components/conversation"
	nrLoader "github.com/dapr/dapr/pkg/components/nameresolution"
	pubsubLoader "github.com/dapr/dapr/pkg/components/pubsub"
	secretstoresLoader "github.com/dapr/dapr/pkg/components/secretstores"
	stateLoader "github.com/dapr/dapr/pkg/components/state"
)

func main() {
	// The same names as Dapr's cmd/daprd/components, so component YAML is unchanged.
	pubsubLoader.DefaultRegistry.RegisterComponent(pubsubredis.NewRedisStreams, "redis")
	pubsubLoader.DefaultRegistry.RegisterComponent(pubsubinmemory.New, "in-memory")
	pubsubLoader.DefaultRegistry.RegisterComponent(pubsubkafka.NewKafka, "kafka")
	stateLoader.DefaultRegistry.RegisterComponent(stateredis.NewRedisStateStore, "redis")
	stateLoader.DefaultRegistry.RegisterComponent(stateinmemory.NewInMemoryStateStore, "in-memory")
	conversationLoader.DefaultRegistry.RegisterComponent(convecho.NewEcho, "echo")
	conversationLoader.DefaultRegistry.RegisterComponent(convopenai.NewOpenAI, "openai")
	secretstoresLoader.DefaultRegistry.RegisterComponent(secretenv.NewEnvSecretStore, "local.env")
	secretstoresLoader.DefaultRegistry.RegisterComponent(secretfile.NewLocalSecretStore, "local.file")
	// Service invocation, HTTPEndpoints included, needs a name resolver. Not mdns, the
	// standalone default: it multicasts on the network. Select this one in the
	// Configuration (spec.nameResolution.component: nameformat).
	nrLoader.DefaultRegistry.RegisterComponent(nrnameformat.NewResolver, "nameformat")
	app.Run()
}
