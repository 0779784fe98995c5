module github.com/wallaroo-engine/wallaroo/connectors/file_source_go

go 1.24

require (
	github.com/wallaroo-engine/wallaroo/sdk-go v0.0.0
	golang.org/x/sys v0.0.0-20210124154548-22da62e12c0c
)

require (
	github.com/Microsoft/go-winio v0.5.2 // indirect
	go.nanomsg.org/mangos/v3 v3.4.2 // indirect
	google.golang.org/protobuf v1.36.12 // indirect
)

replace github.com/wallaroo-engine/wallaroo/sdk-go => ../../sdk-go
