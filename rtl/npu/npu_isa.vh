// Field positions of edgekit's NPU instruction word (docs/npu-isa.md).
// Generated from edgekit/npu/isa.py by edgekit.npu.rtl_sources.isa_header(); a test checks it.
`ifndef NPU_ISA_VH
`define NPU_ISA_VH
`define LOAD_BUFFER 8:7
`define LOAD_INT8_SRC 9:9
`define LOAD_SRAM_BASE 29:10
`define LOAD_DRAM_ADDR 69:30
`define LOAD_Y_SIZE 81:70
`define LOAD_X_SIZE 93:82
`define LOAD_CHUNK 109:94
`define LOAD_X_STRIDE 133:110
`define LOAD_Y_STRIDE 165:134
`define LOAD_PAD_TOP 173:166
`define LOAD_PAD_BOTTOM 181:174
`define LOAD_PAD_LEFT 189:182
`define LOAD_PAD_RIGHT 197:190
`define LOAD_PAD_VALUE 205:198
`define STORE_SRAM_BASE 26:7
`define STORE_DRAM_ADDR 66:27
`define STORE_Y_SIZE 78:67
`define STORE_X_SIZE 90:79
`define STORE_CHUNK 106:91
`define STORE_X_STRIDE 130:107
`define STORE_Y_STRIDE 162:131
`define GEMM_RESET 7:7
`define GEMM_ACC_BASE 27:8
`define GEMM_INP_BASE 47:28
`define GEMM_WGT_BASE 67:48
`define GEMM_EXT_OUTER 79:68
`define GEMM_EXT_INNER 91:80
`define GEMM_ACC_SO 111:92
`define GEMM_ACC_SI 127:112
`define GEMM_INP_SO 147:128
`define GEMM_INP_SI 163:148
`define ALU_OP 10:7
`define ALU_DST_BASE 30:11
`define ALU_SRC_BASE 50:31
`define ALU_PARAM_BASE 70:51
`define ALU_COUNT 90:71
`define ALU_STRIDE 106:91
`define ALU_RELU 107:107
`define ALU_ZIN 116:108
`define ALU_ZIN_B 125:117
`define ALU_ZOUT 134:126
`define ALU_LO 143:135
`define ALU_HI 152:144
`endif
