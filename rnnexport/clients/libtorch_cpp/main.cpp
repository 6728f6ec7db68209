// rnnexport's LibTorch client: a deployment-side consumer of model.pt (TorchScript).
//
//   rnnexport_libtorch [MODEL.pt|-] [THREADS]
//
// Prints "ready" (after loading MODEL.pt, if given), then answers one line per request on stdin:
//   LOAD PATH                loads the TorchScript module at PATH (the rest of the line), replacing the
//                            one loaded before; one process serves many artifacts in turn
//   RUN DIR                  reads DIR/inputs.txt ("name dtype ndim d0 d1 ..." per line, dtype float32 or
//                            int64; a first line "positional" passes the tensors in file order instead,
//                            for model specs) and DIR/<name>.bin (little-endian, C order), calls forward with the
//                            artifact calling contract: (input, h_0[, lengths]) or, when c_0 is given,
//                            (input, (h_0, c_0)[, lengths]); writes DIR/<i>.bin (float32) and
//                            DIR/outputs.txt for each tensor i of the (flattened) returned tuple
//   BENCH DIR WARMUP REPEAT  the same forward WARMUP + REPEAT times; answers "ok <ms of each timed run>"
// Answers "ok" or "error <message>" on one line.
#include <ATen/Parallel.h>
#include <torch/script.h>

#include <algorithm>
#include <chrono>
#include <fstream>
#include <map>
#include <iostream>
#include <sstream>
#include <string>
#include <vector>

namespace {

std::vector<torch::jit::IValue> read_inputs(const std::string& dir) {
  std::ifstream index(dir + "/inputs.txt");
  if (!index) throw std::runtime_error("cannot read " + dir + "/inputs.txt");
  std::map<std::string, torch::Tensor> named;
  std::vector<torch::jit::IValue> positional;
  bool by_position = false;
  std::string line;
  while (std::getline(index, line)) {
    if (line.empty()) continue;
    if (line == "positional") { by_position = true; continue; }
    std::istringstream fields(line);
    std::string name, dtype;
    int64_t ndim = 0;
    fields >> name >> dtype >> ndim;
    std::vector<int64_t> shape(ndim);
    int64_t count = 1;
    for (auto& d : shape) { fields >> d; count *= d; }
    auto type = dtype == "int64" ? torch::kInt64 : torch::kFloat32;
    auto tensor = torch::empty(shape, type);
    const auto bytes = static_cast<std::streamsize>(count * tensor.element_size());
    std::ifstream data(dir + "/" + name + ".bin", std::ios::binary);
    if (!data) throw std::runtime_error("cannot read " + name + ".bin");
    data.read(reinterpret_cast<char*>(tensor.data_ptr()), bytes);
    if (data.gcount() != bytes) throw std::runtime_error(name + ".bin is shorter than its shape");
    named[name] = tensor;
    positional.emplace_back(tensor);
  }
  if (by_position) return positional;  // a model spec: m(*inputs) in the file's order
  for (const char* required : {"input", "h_0"})
    if (!named.count(required)) throw std::runtime_error(std::string("missing input ") + required);
  std::vector<torch::jit::IValue> args{named["input"]};
  if (named.count("c_0")) {
    args.emplace_back(c10::ivalue::Tuple::create({named["h_0"], named["c_0"]}));
  } else {
    args.emplace_back(named["h_0"]);
  }
  if (named.count("lengths")) args.emplace_back(named["lengths"]);
  return args;
}

void flatten(const torch::jit::IValue& value, std::vector<torch::Tensor>& out) {
  if (value.isTuple()) {
    for (const auto& element : value.toTuple()->elements()) flatten(element, out);
  } else if (value.isList()) {
    for (const auto& element : value.toListRef()) flatten(element, out);
  } else if (value.isGenericDict()) {  // a dict output: its values in insertion order, as Python's
    for (const auto& item : value.toGenericDict()) flatten(item.value(), out);
  } else {
    out.push_back(value.toTensor());
  }
}

void write_outputs(const std::string& dir, const torch::jit::IValue& result) {
  std::vector<torch::Tensor> tensors;
  flatten(result, tensors);
  std::ofstream index(dir + "/outputs.txt");
  for (size_t i = 0; i < tensors.size(); ++i) {
    auto t = tensors[i].contiguous().to(torch::kFloat32);
    index << i << " " << t.dim();
    for (auto d : t.sizes()) index << " " << d;
    index << "\n";
    std::ofstream data(dir + "/" + std::to_string(i) + ".bin", std::ios::binary);
    data.write(reinterpret_cast<const char*>(t.data_ptr<float>()), t.numel() * sizeof(float));
  }
}

std::string one_line(std::string text) {
  std::replace(text.begin(), text.end(), '\n', ' ');
  return text.substr(0, 500);
}

bool load(torch::jit::script::Module& module, const std::string& path) {
  try {
    auto loaded = torch::jit::load(path);
    loaded.eval();
    module = loaded;
    return true;
  } catch (const std::exception& e) {
    std::cout << "error cannot load " << path << ": " << one_line(e.what()) << std::endl;
    return false;
  }
}

}  // namespace

int main(int argc, char** argv) {
  if (argc >= 3 && std::stoi(argv[2]) > 0) at::set_num_threads(std::stoi(argv[2]));
  torch::jit::script::Module module;
  bool loaded = argc >= 2 && std::string(argv[1]) != "-";
  if (loaded && !load(module, argv[1])) return 1;
  std::cout << "ready" << std::endl;
  std::string line;
  while (std::getline(std::cin, line)) {
    if (line.rfind("LOAD ", 0) == 0) {
      loaded = load(module, line.substr(5));
      if (loaded) std::cout << "ok" << std::endl;
      continue;
    }
    std::istringstream request(line);
    std::string command, dir;
    request >> command >> dir;
    try {
      if (!loaded) throw std::runtime_error("no model loaded (LOAD PATH first)");
      auto args = read_inputs(dir);
      c10::InferenceMode guard;
      if (command == "RUN") {
        write_outputs(dir, module.forward(args));
        std::cout << "ok" << std::endl;
      } else if (command == "BENCH") {
        int warmup = 0, repeat = 1;
        request >> warmup >> repeat;
        for (int i = 0; i < warmup; ++i) module.forward(args);
        std::vector<double> ms;
        for (int i = 0; i < repeat; ++i) {
          auto start = std::chrono::steady_clock::now();
          module.forward(args);
          ms.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count());
        }
        std::cout << "ok";
        for (double t : ms) std::cout << " " << t;
        std::cout << std::endl;
      } else {
        std::cout << "error unknown command " << command << std::endl;
      }
    } catch (const std::exception& e) {
      std::cout << "error " << one_line(e.what()) << std::endl;
    }
  }
  return 0;
}
