module github.com/wallaroo-engine/wallaroo/bench/w3/go

go 1.24

require github.com/wallaroo-engine/wallaroo/sdk-go v0.0.0

require (
	github.com/Microsoft/go-winio v0.5.2 // indirect
	go.nanomsg.org/mangos/v3 v3.4.2 // indirect
	golang.org/x/sys v0.0.0-20210124154548-22da62e12c0c // indirect
	google.golang.org/protobuf v1.36.12 // indirect
)

replace github.com/wallaroo-engine/wallaroo/sdk-go => ../../../sdk-go
