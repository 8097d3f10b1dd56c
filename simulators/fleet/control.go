package fleet

import (
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/smelterio/smelter/simulators/faults"
)

// Handler serves the control API (JSON):
//
//	GET    /devices           devices with addresses, nameplates, current values and write counts
//	GET    /devices/{id}      one device
//	GET    /faults            every fault with its state
//	POST   /faults            inject a fault (a faults.Spec); 201 with its status
//	DELETE /faults/{id}       clear a fault; 204
//	POST   /advance?by=10m    step a manual fleet (speed 0)
//	GET    /time              current simulated time
func (f *Fleet) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /devices", func(w http.ResponseWriter, r *http.Request) {
		out := []deviceView{}
		for _, d := range f.Devices() {
			out = append(out, f.view(d))
		}
		writeJSON(w, http.StatusOK, out)
	})
	mux.HandleFunc("GET /devices/{id}", func(w http.ResponseWriter, r *http.Request) {
		d, ok := f.Device(r.PathValue("id"))
		if !ok {
			writeError(w, http.StatusNotFound, "unknown device "+r.PathValue("id"))
			return
		}
		writeJSON(w, http.StatusOK, f.view(d))
	})
	mux.HandleFunc("GET /faults", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, f.Faults())
	})
	mux.HandleFunc("POST /faults", func(w http.ResponseWriter, r *http.Request) {
		var spec faults.Spec
		dec := json.NewDecoder(io.LimitReader(r.Body, 1<<16))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&spec); err != nil {
			writeError(w, http.StatusBadRequest, "fault: "+err.Error())
			return
		}
		st, err := f.InjectFault(spec)
		if err != nil {
			writeError(w, http.StatusBadRequest, err.Error())
			return
		}
		writeJSON(w, http.StatusCreated, st)
	})
	mux.HandleFunc("DELETE /faults/{id}", func(w http.ResponseWriter, r *http.Request) {
		if err := f.ClearFault(r.PathValue("id")); err != nil {
			writeError(w, http.StatusNotFound, err.Error())
			return
		}
		w.WriteHeader(http.StatusNoContent)
	})
	mux.HandleFunc("POST /advance", func(w http.ResponseWriter, r *http.Request) {
		d, err := time.ParseDuration(r.URL.Query().Get("by"))
		if err != nil || d <= 0 || d > 30*24*time.Hour {
			writeError(w, http.StatusBadRequest, "by: want a positive duration up to 720h, e.g. ?by=10m")
			return
		}
		if err := f.Advance(d); err != nil {
			writeError(w, http.StatusConflict, err.Error())
			return
		}
		writeJSON(w, http.StatusOK, map[string]any{"time": f.Now()})
	})
	mux.HandleFunc("GET /time", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, map[string]any{"time": f.Now(), "speed": f.cfg.Speed})
	})
	return mux
}

type deviceView struct {
	DeviceInfo
	Time   time.Time          `json:"time"`
	Values map[string]float64 `json:"values"`
	// ModbusWrites: write requests the device's Modbus front received
	// (applied or refused), as smelter_sim_modbus_writes_total.
	ModbusWrites int64 `json:"modbus_writes"`
}

func (f *Fleet) view(d DeviceInfo) deviceView {
	v, at, _ := f.Values(d.ID)
	n, _ := f.Writes(d.ID)
	return deviceView{DeviceInfo: d, Time: at, Values: v, ModbusWrites: n}
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

func writeError(w http.ResponseWriter, code int, msg string) {
	writeJSON(w, code, map[string]string{"error": strings.TrimSpace(msg)})
}
