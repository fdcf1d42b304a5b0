# include/telltale.hpp (the C++17 header over the C API) is tested by compiling
# tests/drivers/cpp_agent.cpp with g++ twice, with exceptions and with -fno-exceptions, warnings
# as errors whatever WERROR says, and running both against a real collector
# (tests/integration/test_cpp.c). `make install` installs the header beside telltale.h.

CPP_AGENT := $(BUILD)/tests/cpp_agent
CPP_AGENT_NOEXCEPT := $(BUILD)/tests/cpp_agent_noexcept
CXXFLAGS_HPP := -std=c++17 $(OPT) -g -Iinclude -pthread -Wall -Wextra -Wpedantic -Wshadow \
	-Werror -MMD -MP $(SANFLAGS) $(CXXFLAGS)

$(CPP_AGENT): tests/drivers/cpp_agent.cpp $(LIB_A) | $(DEPS_TEST)
	@mkdir -p $(@D)
	$(CXX) $(CXXFLAGS_HPP) -MF $@.d -o $@ $< $(LIB_A) $(LDFLAGS_ALL) $(LIB_LDLIBS)

$(CPP_AGENT_NOEXCEPT): tests/drivers/cpp_agent.cpp $(LIB_A) | $(DEPS_TEST)
	@mkdir -p $(@D)
	$(CXX) $(CXXFLAGS_HPP) -fno-exceptions -MF $@.d -o $@ $< $(LIB_A) $(LDFLAGS_ALL) \
		$(LIB_LDLIBS)

-include $(CPP_AGENT).d $(CPP_AGENT_NOEXCEPT).d

$(RUNNER): | $(CPP_AGENT) $(CPP_AGENT_NOEXCEPT)
